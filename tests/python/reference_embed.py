"""An independent reference for inf_ir's embeddings: Python tokenizers +
onnxruntime + numpy, written from the rules in the README, sharing no code
with the Rust engine.

Rules: query side = template "{query} {instruction}" (query alone when the
instruction is NULL or blank); passage side as is; at most `max_tokens`
tokens with the special tokens; when a query side is too long the query's
last tokens go first and the instruction stays whole; mean pooling over real
tokens; L2 normalisation. Each text runs alone (no padding at all).
"""
import json
import os

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


class Reference:
    def __init__(self, model_dir, max_tokens=256, threads=2):
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        with open(os.path.join(model_dir, "tokenizer.json")) as f:
            single = json.load(f)["post_processor"]["single"]
        self.prefix = [self.tok.token_to_id(p["SpecialToken"]["id"]) for p in single[:1] if "SpecialToken" in p]
        self.suffix = [self.tok.token_to_id(p["SpecialToken"]["id"]) for p in single[1:] if "SpecialToken" in p]
        self.budget = max_tokens - len(self.prefix) - len(self.suffix)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), opts,
                                         providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.sess.get_inputs()}

    def ids_passage(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids[: self.budget]

    def ids_query(self, instruction, query):
        if instruction is None or instruction.strip() == "":
            return self.ids_passage(query)
        text = query + " " + instruction
        enc = self.tok.encode(text, add_special_tokens=False)
        ids, offsets = list(enc.ids), enc.offsets  # char offsets
        excess = len(ids) - self.budget
        if excess <= 0:
            return ids
        query_positions = [i for i, (start, _) in enumerate(offsets) if start < len(query)]
        drop = set(query_positions[::-1][:excess])
        kept = [t for i, t in enumerate(ids) if i not in drop]
        return kept[: self.budget]

    def embed_ids(self, content_ids):
        ids = np.array([self.prefix + content_ids + self.suffix], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.sess.run(None, feeds)[0][0].astype(np.float64)
        v = hidden.mean(axis=0)
        return v / np.linalg.norm(v)

    def passage(self, text):
        return self.embed_ids(self.ids_passage(text))

    def query(self, instruction, query):
        return self.embed_ids(self.ids_query(instruction, query))
