#!/usr/bin/env python3
"""An independent NumPy reading of the bundled models (no torch, no tokenizers): the byte-level BPE
of tokenizer.json, bf16 safetensors, and the Llama forward pass. It re-scores the samples of an
`eval_reference.py --dump` file with any PRM folder, writing a dump with the new scores that
`analyze_samples.py` reads; run on a dump made with the same PRM it checks this file reader
against PyTorch (scores agree to about 1e-3).

    python3 tools/train_reference/numpy_reference.py --prm models/prm \\
        --dump tools/train_reference/work/eval_samples.json --limit 100 --out /tmp/rescored.json

Only ASCII text (all this task produces) is pre-tokenized exactly like the Qwen2 regex.
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402

# Qwen2's split regex with \p{L} -> [A-Za-z] and \p{N} -> [0-9] (exact on ASCII text).
_PRETOKEN = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BpeTokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        self.vocab = spec["model"]["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in spec["model"]["merges"]]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in self.specials) + ")")
        self.byte_map = _bytes_to_unicode()

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i)
                     for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text):
        ids = []
        for piece in self.special_re.split(text):
            if not piece:
                continue
            if piece in self.specials:
                ids.append(self.specials[piece])
                continue
            for pre in _PRETOKEN.findall(piece):
                ids += self._bpe("".join(self.byte_map[b] for b in pre.encode("utf-8")))
        return ids


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw = data[lo:hi]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype=np.float32)
        else:
            raise ValueError(f"{name}: dtype {info['dtype']} not handled")
        out[name] = arr.reshape(info["shape"])
    return out


class Llama:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        c = self.cfg
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        theta = (c.get("rope_parameters") or {}).get("rope_theta", c.get("rope_theta", 10000.0))
        self.inv_freq = 1.0 / theta ** (np.arange(0, self.head_dim, 2) / self.head_dim)
        self.eps = c["rms_norm_eps"]

    def _norm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def _rope(self, x, cos, sin):  # x [B, H, T, D], rotate-half convention
        half = self.head_dim // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def hidden(self, ids):
        """ids [B, T] (right-padded) -> final normed hidden states [B, T, hidden]."""
        w, B, T = self.w, ids.shape[0], ids.shape[1]
        x = w["model.embed_tokens.weight"][ids]
        freqs = np.arange(T)[:, None] * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        group = self.heads // self.kv_heads
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self._norm(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(B, T, self.heads, -1)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(B, T, self.kv_heads, -1)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(B, T, self.kv_heads, -1)
            q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
            att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(self.head_dim) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, -1)
            x = x + o @ w[p + "self_attn.o_proj.weight"].T
            h = self._norm(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "mlp.down_proj.weight"].T
        return self._norm(x, w["model.norm.weight"])


def prm_text(question, steps, cfg):
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return prompt + cfg["step_separator"].join(s.strip() + cfg["step_tag"] for s in steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prm", default="models/prm")
    ap.add_argument("--dump", required=True)
    ap.add_argument("--limit", type=int, default=100, help="first N problems")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    with open(os.path.join(args.prm, "prm_config.json")) as f:
        cfg = json.load(f)
    tok = BpeTokenizer(os.path.join(args.prm, "tokenizer.json"))
    model = Llama(args.prm)
    head = model.w["lm_head.weight"][[cfg["positive_token_id"], cfg["negative_token_id"]]]
    with open(args.dump) as f:
        dump = json.load(f)[:args.limit]
    jobs = []
    for pi, item in enumerate(dump):
        for si, text in enumerate(item["samples"]):
            steps = task.split_steps(text)
            if steps:
                jobs.append((pi, si, tok.encode(prm_text(item["question"], steps, cfg))))
    for item in dump:
        item["reference_scores"] = item["prm_scores"]
        item["prm_scores"] = [[] for _ in item["samples"]]
    jobs.sort(key=lambda j: len(j[2]))
    diffs = []
    for start in range(0, len(jobs), args.batch):
        chunk = jobs[start:start + args.batch]
        width = max(len(j[2]) for j in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        for r, (_, _, seq) in enumerate(chunk):
            ids[r, :len(seq)] = seq
        hid = model.hidden(ids)
        for r, (pi, si, seq) in enumerate(chunk):
            tags = [t for t, x in enumerate(seq) if x == cfg["step_tag_id"]]
            logits = hid[r, tags] @ head.T
            scores = (1 / (1 + np.exp(-(logits[:, 0] - logits[:, 1])))).tolist()
            dump[pi]["prm_scores"][si] = scores
            ref = dump[pi]["reference_scores"][si]
            diffs += [abs(a - b) for a, b in zip(scores, ref)]
    with open(args.out, "w") as f:
        json.dump(dump, f)
    print(f"scored {len(jobs)} solutions; max |score - dump score| {max(diffs):.2e}, "
          f"mean {sum(diffs) / len(diffs):.2e}")


if __name__ == "__main__":
    main()
