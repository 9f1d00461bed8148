#!/usr/bin/env python3
"""A decoder embedder end to end: SmolLM2-135M-Instruct (Llama architecture,
exported by scripts/export_decoder_onnx.py at set-up) registered with
inf_register_model, InF-Embed's query side "{query} {instruction}".

- Registration reads last-token pooling, 576 dimensions and the pad id from
  the folder; the graph's position_ids input is fed.
- Parity: 100 passages and 100 (instruction, query) pairs, some longer than
  max_tokens (128 here), embedded through SQL in batches (inf_embed_many,
  inf_embed_query_many) against Python ONNX Runtime on the same graph, each
  text alone (a padded batch gives each text the vector it gets alone).
- Independent references (--gguf): the same SQL vectors against llama.cpp's
  own embedding of the GGUF (mean >= 0.98) and a float64 numpy forward pass
  of its dequantised weights (min >= 0.9999; --float-ref of the texts).
- Half precision: the same graph with an fp16 or bf16 output gives the same
  vectors (cosine >= 0.9999).
- int8: the folder's int8 copy agrees with float32 (mean cosine >= 0.99).
- EOS: a tokenizer.json whose post-processor appends EOS (Qwen3-Embedding's
  way) makes inf_ir pool the EOS state, kept when a text is cut.
- Search: a corpus embedded with it, searched with inf_search through its
  inf_ivf index; top 10 against exact numpy search over the stored vectors.

Data: ../shared/data (DL19 passages, msmarco-sample instructions), else the
repository's sample passages. Usage: test_decoder.py --port P --model-dir DIR [--int8-dir DIR] [--data DIR]
    [--gguf FILE --llama-python PY [--float-ref N]] [--name NAME] [--parity-only]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import psycopg
from tokenizers import Tokenizer

MAX_TOKENS = 128
NAME = "smollm2"  # the registered model's name (--name)
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def texts_from(args):
    dl19 = os.path.join(args.data, "dl19", "passages.jsonl")
    instructions = os.path.join(args.data, "msmarco-sample", "instructions.jsonl")
    if os.path.isfile(dl19) and os.path.isfile(instructions):
        passages = [json.loads(l)["text"] for _, l in zip(range(100), open(dl19))]
        pairs = []
        for line in open(instructions):
            row = json.loads(line)
            pairs.append((row["text"], row["metadata"]["origin_query"]))
            if len(pairs) == 100:
                break
        # Ten instructions past max_tokens: the query side is cut as the passages are.
        pairs[-10:] = [(f"{i} {i} {i}", q) for i, q in pairs[-10:]]
        return passages, pairs, "DL19 passages, msmarco-sample instructions"
    sample = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sample_passages.tsv")
    passages = [line.split("\t", 1)[1].strip() for line in open(sample)]
    pairs = [("about recommended dosage, not fractures", "does vitamin d prevent fractures"),
             ("only meta-analyses that pool many trials", "does vitamin d prevent fractures")] * 8
    return passages, pairs, "the repository's sample passages (../shared/data absent)"


class Reference:
    """The same graph in Python ONNX Runtime, one text at a time, last token."""

    def __init__(self, folder):
        self.tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(os.path.join(folder, "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])

    def embed(self, text, query_chars=0):
        ids, n = self.cut(text, query_chars)
        return self.embed_ids(ids), n

    def cut(self, text, query_chars=0):
        """`text`'s token ids cut to MAX_TOKENS as inf_ir cuts (README, inf_embed_query): tokens of
        the query part (its first `query_chars` characters) go first, from its end; then the end."""
        enc = self.tok.encode(text, add_special_tokens=False)
        keep = [True] * len(enc.ids)
        excess = max(0, len(keep) - MAX_TOKENS)
        query_tokens = [i for i, (start, _) in enumerate(enc.offsets) if start < query_chars]
        for i in query_tokens[::-1][:excess]:
            keep[i] = False
        excess -= min(excess, len(query_tokens))
        for i in [i for i in range(len(keep)) if keep[i]][::-1][:excess]:
            keep[i] = False
        return [t for t, k in zip(enc.ids, keep) if k], len(enc.ids)

    def embed_ids(self, token_ids):
        ids = np.array([token_ids], np.int64)
        out = self.session.run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": np.ones_like(ids),
            "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :]})[0]
        v = out[0, -1].astype(np.float64)
        return v / np.linalg.norm(v)


LLAMA_EMBED = r"""
import json, sys
import numpy as np
import llama_cpp
gguf, texts_path, out = sys.argv[1:4]
llm = llama_cpp.Llama(gguf, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST, n_ctx=512,
                      n_batch=512, n_ubatch=512, n_threads=2, verbose=False)
np.save(out, np.array([llm.embed(t, normalize=True) for t in json.load(open(texts_path))], np.float64))
"""


def independent_references(args, ref, sql_vectors, cut_ids):
    """The SQL vectors against references that share nothing with the ONNX
    graph: llama.cpp's own last-token embedding of the GGUF (its quantised
    compute; the texts as cut, decoded to text) and a float64 numpy forward
    pass of the dequantised weights (scripts/check_decoder_export.py's,
    written from the architecture) on the same token ids."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
    from check_decoder_export import Gguf, reference_forward  # noqa: E402
    with tempfile.TemporaryDirectory() as tmp:
        json.dump([ref.tok.decode(ids) for ids in cut_ids], open(os.path.join(tmp, "texts.json"), "w"))
        subprocess.run([args.llama_python, "-c", LLAMA_EMBED, args.gguf, os.path.join(tmp, "texts.json"),
                        os.path.join(tmp, "llama.npy")], check=True, stderr=subprocess.DEVNULL)
        llama = np.load(os.path.join(tmp, "llama.npy"))
    cos = [float(a @ b) for a, b in zip(sql_vectors, llama)]
    check(np.mean(cos) >= 0.98, f"{len(cos)} texts through SQL vs llama.cpp's quantised last-token embedding of the GGUF: "
                                f"mean cosine {np.mean(cos):.4f}, min {min(cos):.4f}")
    gg = CachedWeights(Gguf(args.gguf))
    n = min(args.float_ref, len(cut_ids))
    # Half passages, half queries when only some are checked.
    picks = sorted(set(list(range(n // 2)) + list(range(len(cut_ids) // 2, len(cut_ids) // 2 + n - n // 2))))
    cos = []
    for i in picks:
        v = reference_forward(gg, np.array(cut_ids[i]))
        cos.append(float(sql_vectors[i] @ (v / np.linalg.norm(v))))
    check(min(cos) >= 0.9999, f"{len(cos)} texts through SQL vs a float64 numpy forward pass of the dequantised "
                              f"weights: min cosine {min(cos):.7f}, mean {np.mean(cos):.7f}")


class CachedWeights:
    """A Gguf whose dequantised weights are kept (float32) between texts."""

    def __init__(self, gg):
        self.gg, self.arch, self.arch_field, self.cache = gg, gg.arch, gg.arch_field, {}

    def weight(self, name):
        if name not in self.cache:
            self.cache[name] = self.gg.weight(name)
        return self.cache[name]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--int8-dir", default=None, help="its int8 copy (scripts/quantize_int8.py)")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    ap.add_argument("--name", default="smollm2", help="register the model as NAME")
    ap.add_argument("--gguf", default=None, help="the GGUF the folder was exported from: the SQL vectors are "
                    "also checked against llama.cpp's embedding of it and a float64 numpy forward pass")
    ap.add_argument("--llama-python", default=None, help="a Python with llama-cpp-python (with --gguf)")
    ap.add_argument("--float-ref", type=int, default=200,
                    help="how many of the 200 texts the float64 forward pass checks (it is slow for large models)")
    ap.add_argument("--parity-only", action="store_true",
                    help="registration, parity, padded batch and int8 only (for large models: benches)")
    args = ap.parse_args()
    global NAME
    NAME = args.name
    if not os.path.isfile(os.path.join(args.model_dir, "model.onnx")):
        sys.exit(f"{args.model_dir}/model.onnx is missing: run scripts/setup.sh")
    admin = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS inf_ir_decoder")
    admin.execute("CREATE DATABASE inf_ir_decoder")
    conn = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=inf_ir_decoder", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION inf_ir")
    row = conn.execute(f"SELECT pooling, dimension, max_tokens FROM inf_register_model('{NAME}', %s, "
                       "query_template => '{query} {instruction}', max_tokens => %s)",
                       (os.path.abspath(args.model_dir), MAX_TOKENS)).fetchone()
    hidden = json.load(open(os.path.join(args.model_dir, "config.json")))["hidden_size"]
    check(row == ("last", hidden, MAX_TOKENS), f"registered from the folder: pooling, dimension, max_tokens = {row}")

    passages, pairs, source = texts_from(args)
    ref = Reference(args.model_dir)
    got = [np.asarray(e, np.float64) for (e,) in conn.execute(
        f"SELECT embedding FROM inf_embed_many(%s, '{NAME}') ORDER BY ord", (passages,)).fetchall()]
    want = [ref.embed(p) for p in passages]
    sql_vectors, cut_ids = list(got), [ref.cut(p)[0] for p in passages]
    cos = [float(g @ w) for g, (w, _) in zip(got, want)]
    long = sum(1 for _, n in want if n > MAX_TOKENS)
    check(len(got) == len(passages) and min(cos) >= 0.9999,
          f"{len(passages)} passages ({source}; {long} past {MAX_TOKENS} tokens) in batches through SQL vs ONNX "
          f"Runtime alone: min cosine {min(cos):.7f}, mean {np.mean(cos):.7f}")
    instructions, queries = [i for i, _ in pairs], [q for _, q in pairs]
    got = [np.asarray(e, np.float64) for (e,) in conn.execute(
        f"SELECT embedding FROM inf_embed_query_many(%s, %s, '{NAME}') ORDER BY ord", (instructions, queries)).fetchall()]
    want = [ref.embed(f"{q} {i}", query_chars=len(q)) for i, q in pairs]
    sql_vectors += got
    cut_ids += [ref.cut(f"{q} {i}", query_chars=len(q))[0] for i, q in pairs]
    cos = [float(g @ w) for g, (w, _) in zip(got, want)]
    long = sum(1 for _, n in want if n > MAX_TOKENS)
    check(len(got) == len(pairs) and min(cos) >= 0.9999,
          f"{len(pairs)} (instruction, query) pairs as \"{{query}} {{instruction}}\" ({long} past {MAX_TOKENS} tokens, "
          "cut query first): "
          f"min cosine {min(cos):.7f}, mean {np.mean(cos):.7f}")
    if args.gguf:
        independent_references(args, ref, sql_vectors, cut_ids)
    alone = np.asarray(conn.execute(f"SELECT inf_embed(%s, '{NAME}')", (passages[0],)).fetchone()[0], np.float64)
    in_batch = np.asarray(conn.execute(f"SELECT embedding FROM inf_embed_many(%s, '{NAME}') WHERE ord = 1",
                                       ([passages[0]] + passages[1:8],)).fetchone()[0], np.float64)
    check(float(alone @ in_batch) >= 0.99999, f"a text alone equals itself in a padded batch: cosine {alone @ in_batch:.7f}")

    # The int8 copy, registered as a model of its own: agreement with float32.
    if args.int8_dir:
        conn.execute(f"SELECT inf_register_model('{NAME}_int8', %s, max_tokens => %s)",
                     (os.path.abspath(args.int8_dir), MAX_TOKENS))
        f32 = [np.asarray(e, np.float64) for (e,) in conn.execute(
            f"SELECT embedding FROM inf_embed_many(%s, '{NAME}') ORDER BY ord", (passages,)).fetchall()]
        i8 = [np.asarray(e, np.float64) for (e,) in conn.execute(
            f"SELECT embedding FROM inf_embed_many(%s, '{NAME}_int8') ORDER BY ord", (passages,)).fetchall()]
        cos = [float(a @ b) for a, b in zip(f32, i8)]
        check(np.mean(cos) >= 0.99, f"int8 (MatMul weights; down, value and output projections float) vs float32 through SQL, "
                                    f"{len(cos)} passages: min cosine {min(cos):.4f}, mean {np.mean(cos):.4f}")
        conn.execute(f"SELECT inf_unregister_model('{NAME}_int8')")

    if args.parity_only:
        finish(conn, admin)
        return

    # Half-precision outputs (graphs exported in fp16 or bf16 hand out their
    # token states so): widened to float32, vectors as the float32 graph's.
    import onnx
    from onnx import TensorProto, helper
    base = onnx.load(os.path.join(args.model_dir, "model.onnx"))
    for label, dtype in (("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)):
        half_dir = tempfile.mkdtemp(prefix=f"inf_ir_decoder_{label}_")
        for name in os.listdir(args.model_dir):
            if name != "model.onnx":
                os.symlink(os.path.join(os.path.abspath(args.model_dir), name), os.path.join(half_dir, name))
        model = onnx.ModelProto()
        model.CopyFrom(base)
        out = model.graph.output[0]
        for node in model.graph.node:
            if "last_hidden_state" in node.output:
                node.output[list(node.output).index("last_hidden_state")] = "float_states"
        model.graph.node.append(helper.make_node("Cast", ["float_states"], ["last_hidden_state"], to=dtype))
        out.type.tensor_type.elem_type = dtype
        onnx.save(model, os.path.join(half_dir, "model.onnx"))
        os.chmod(half_dir, 0o755)
        name = f"smollm2_{label}"
        conn.execute("SELECT inf_register_model(%s, %s, max_tokens => %s)", (name, half_dir, MAX_TOKENS))
        got = [np.asarray(e, np.float64) for (e,) in conn.execute(
            "SELECT embedding FROM inf_embed_many(%s, %s) ORDER BY ord", (passages[:20], name)).fetchall()]
        want = [ref.embed(p)[0] for p in passages[:20]]
        cos = [float(g @ w) for g, w in zip(got, want)]
        check(min(cos) >= 0.9999, f"a graph whose output is {label}: widened to float32, min cosine {min(cos):.7f} "
                                  f"to the float32 graph")
        conn.execute("SELECT inf_unregister_model(%s)", (name,))
        shutil.rmtree(half_dir)
    del base

    # EOS appended when the folder's tokenizer says so (a TemplateProcessing
    # post-processor, as export_decoder_onnx.py --append-eos writes and as
    # Qwen3-Embedding ships): the EOS state is pooled, and kept when a text is cut.
    eos_dir = tempfile.mkdtemp(prefix="inf_ir_decoder_eos_")
    for name in os.listdir(args.model_dir):
        if name != "tokenizer.json":
            os.symlink(os.path.join(os.path.abspath(args.model_dir), name), os.path.join(eos_dir, name))
    spec = json.load(open(os.path.join(args.model_dir, "tokenizer.json")))
    eos_id = json.load(open(os.path.join(args.model_dir, "config.json")))["eos_token_id"]
    eos = next(t for t, i in spec["model"]["vocab"].items() if i == eos_id)
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eos, "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}},
                                       {"SpecialToken": {"id": eos, "type_id": 0}}],
                              "special_tokens": {eos: {"id": eos, "ids": [eos_id], "tokens": [eos]}}}
    json.dump(spec, open(os.path.join(eos_dir, "tokenizer.json"), "w"))
    os.chmod(eos_dir, 0o755)
    conn.execute(f"SELECT inf_register_model('{NAME}_eos', %s, max_tokens => %s)", (eos_dir, MAX_TOKENS))
    sample = passages[:20]
    got = [np.asarray(e, np.float64) for (e,) in conn.execute(
        f"SELECT embedding FROM inf_embed_many(%s, '{NAME}_eos') ORDER BY ord", (sample,)).fetchall()]
    want = [ref.embed_ids(ref.tok.encode(p, add_special_tokens=False).ids[:MAX_TOKENS - 1] + [eos_id]) for p in sample]
    cos = [float(g @ w) for g, w in zip(got, want)]
    plain = [float(g @ ref.embed(p)[0]) for g, p in zip(got, sample)]
    check(min(cos) >= 0.9999 and max(plain) < 0.9999,
          f"EOS appended by the tokenizer's post-processor ({eos!r}), kept when cut at {MAX_TOKENS}: min cosine "
          f"{min(cos):.7f} to the reference with EOS (without it at most {max(plain):.4f})")
    conn.execute(f"SELECT inf_unregister_model('{NAME}_eos')")
    shutil.rmtree(eos_dir)

    # A corpus embedded with the decoder, searched through its index.
    conn.execute(f"SELECT inf_create_corpus('dec', '{NAME}')")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO inf_ir.passages (corpus_id, external_id, body) "
                        "SELECT corpus_id, %s, %s FROM inf_ir.corpora WHERE name = 'dec'",
                        [(f"p{i}", p) for i, p in enumerate(passages)])
    conn.execute("CALL inf_embed_corpus('dec')")
    conn.execute("SELECT inf_corpus_index('dec')")
    stored = conn.execute("SELECT external_id, embedding FROM inf_ir.passages JOIN inf_ir.corpora USING (corpus_id) "
                          "WHERE name = 'dec' ORDER BY passage_id").fetchall()
    ids = [r[0] for r in stored]
    matrix = np.array([r[1] for r in stored], np.float32)
    same = 0
    for instruction, query in pairs[:10]:
        found = [r[0] for r in conn.execute("SELECT external_id FROM inf_search(%s, %s, 10, 'dec') ORDER BY rank",
                                            (instruction, query)).fetchall()]
        q = np.asarray(conn.execute(f"SELECT inf_embed_query(%s, %s, '{NAME}')", (instruction, query)).fetchone()[0],
                       np.float32)
        scores = matrix @ q
        exact = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:10]]
        same += found == exact
    check(same == 10, f"inf_search over a corpus of {len(ids)} passages embedded with SmolLM2, through its index: "
                      f"top 10 equal to exact numpy search for {same}/10 queries")
    finish(conn, admin)


def finish(conn, admin):
    conn.close()
    admin.execute("DROP DATABASE IF EXISTS inf_ir_decoder WITH (FORCE)")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
