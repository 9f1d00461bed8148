#!/usr/bin/env python3
"""An int8 copy of an ONNX embedding folder, for CPU speed: ONNX Runtime's
dynamic quantisation of MatMul weights (int8, per output channel;
activations quantised at run time), registered as a model of its own.

Decoders carry outlier features through their MLP down projections and
attention value/output projections, and last-token pooling reads them:
quantising every MatMul moved SmolLM2's vectors to mean cosine 0.956
against float32 (64 DL19 passages), keeping the down projections float
0.995, keeping the value and output projections float too 0.997; those
stay float by default (--keep-float '' quantises every MatMul). The agreement with the
float32 folder is measured on sample texts and printed; it must reach
--min-mean (0.99) or nothing is written.

Weights use 7 bits (reduce_range): on x86 CPUs without VNNI (AVX2 only)
ONNX Runtime's u8s8 kernels add pairs of products in saturating 16-bit
lanes, and full-range weights overflowed there: SmolLM2 fell to mean
cosine 0.936 (min 0.857) on an AVX2-only EPYC, against 0.996 with 7 bits.
A folder made on one machine may run on another, so every copy uses 7 bits.

Usage: quantize_int8.py FOLDER OUT_FOLDER [--keep-float ffn_down,...] [--min-mean 0.99]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "sample_passages.tsv")


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def pooled(sess, tok, text, pooling):
    ids = np.array([tok.encode(text).ids[:256]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    names = {i.name for i in sess.get_inputs()}
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    out = sess.run(None, feeds)
    states = next((o for o, meta in zip(out, sess.get_outputs()) if meta.name == "last_hidden_state"), out[0])[0]
    v = {"last": states[-1], "cls": states[0]}.get(pooling, states.mean(0)).astype(np.float64)
    return v / np.linalg.norm(v)


def pooling_of(folder):
    cfg = os.path.join(folder, "1_Pooling", "config.json")
    c = json.load(open(cfg)) if os.path.isfile(cfg) else {}
    return "last" if c.get("pooling_mode_lasttoken") else "cls" if c.get("pooling_mode_cls_token") else "mean"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--keep-float", default="ffn_down,down_proj,attn_v,v_proj,attn_output,o_proj",
                    help="MatMuls whose weight name contains one of these stay float32")
    ap.add_argument("--min-mean", type=float, default=0.99)
    args = ap.parse_args()
    source = os.path.join(args.folder, "model.onnx")
    # The graph without its weights: a 1.5B float32 model is 6 GB, and
    # loading it here as well as in the quantiser runs 24 GB machines out.
    model = onnx.load(source, load_external_data=False)
    unnamed = any(not n.name for n in model.graph.node)
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}_{node.output[0]}"  # exclusions go by node name
    keep = [k for k in args.keep_float.split(",") if k]
    excluded = [n.name for n in model.graph.node
                if n.op_type == "MatMul" and len(n.input) > 1 and any(k in n.input[1] for k in keep)]
    large = any(t.external_data for t in model.graph.initializer)
    # Beside the output, so that its files move without copies.
    tmp = tempfile.mkdtemp(prefix=".inf_ir_int8_", dir=os.path.dirname(os.path.abspath(args.out)))
    named = source
    try:
        if unnamed:
            # A renamed copy of the graph; one with external weights must sit
            # beside them (onnx reads no linked weights files).
            where = args.folder if large else tmp
            named = os.path.join(where, f".inf_ir_named_{os.getpid()}.onnx")
            onnx.save_model(model, named)
        del model
        quantized = os.path.join(tmp, "model.onnx")
        quantize_dynamic(named, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, reduce_range=True, nodes_to_exclude=excluded, use_external_data_format=large)
        tok = Tokenizer.from_file(os.path.join(args.folder, "tokenizer.json"))
        pooling = pooling_of(args.folder)
        texts = [line.split("\t", 1)[1].strip() for line in open(SAMPLE)]
        f32, i8 = session(source), session(quantized)
        cos = [float(pooled(f32, tok, t, pooling) @ pooled(i8, tok, t, pooling)) for t in texts]
        print(f"int8 vs float32 on {len(texts)} texts ({pooling} pooling; {len(excluded)} MatMuls kept float): "
              f"min cosine {min(cos):.4f}, mean {np.mean(cos):.4f}")
        if np.mean(cos) < args.min_mean:
            sys.exit(f"mean cosine below {args.min_mean}: not written (keep more MatMuls float with --keep-float)")
        os.makedirs(args.out, exist_ok=True)
        for name in os.listdir(args.folder):
            # model.safetensors stays behind: the GPU encoder would read those
            # float weights for a model registered as this int8 graph.
            if name.startswith("model.onnx") or name.startswith(".inf_ir_named_") or name == "model.safetensors":
                continue
            src = os.path.join(args.folder, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(args.out, name))
        for name in os.listdir(tmp):
            if name.startswith("model.onnx"):
                shutil.move(os.path.join(tmp, name), os.path.join(args.out, name))
                # tempfile and onnx make 0600 files: the server's OS user must read them.
                os.chmod(os.path.join(args.out, name), 0o644)
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if named != source and os.path.exists(named):
            os.remove(named)


if __name__ == "__main__":
    main()
