#!/usr/bin/env python3
"""Writes the SentencePiece-style BPE tokenizer fixtures of
tests/fixtures/tokenizers/ (tokenizer.json, tokenizer_config.json) in the two
layouts Hugging Face checkpoints ship:

  llama2_style/    Llama-2 / Mistral-7B-v0.1: normalizer Prepend("▁") + Replace(" ", "▁"), no
                   pre-tokenizer, BPE with byte_fallback and fuse_unk, decoder Replace + ByteFallback
                   + Fuse + Strip(1 leading space); <s> added by a TemplateProcessing.
  metaspace_style/ newer conversions (Mistral v0.3, Llama-2 re-saved by transformers >= 4.40):
                   no normalizer, pre-tokenizer Metaspace(prepend_scheme "first", split false),
                   decoder Metaspace + ByteFallback + Fuse.

The vocabulary is learnt here by plain BPE over characters from a small corpus (merges ranked
by frequency), 256 <0xXX> byte tokens for the byte fallback. The expected ids and texts come
from Hugging Face `tokenizers` itself: tools/tokenizer_fixtures/expected_ids.cjs (npm
`tokenizers`) writes each folder's tokens.json.

    python3 tools/tokenizer_fixtures/make_sentencepiece_fixtures.py
    (cd /tmp/tok && npm install tokenizers@0.23.2) && NODE_PATH=/tmp/tok/node_modules \\
      node tools/tokenizer_fixtures/expected_ids.cjs
"""
import collections
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
SPACE = "\u2581"
CORPUS = """Start with 417. Add 325, multiply by 3, subtract 96. What is the result?
The answer is 2130. Step one: 417 + 325 = 742. Step two: 742 * 3 = 2226.
the quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs.
Tokenizers split text into pieces: words, subwords and bytes when nothing else fits.
résumé, naïve café — übermäßig schön. Ünïcödé tëxt with accents is common in the wild.
"""


def learn_merges(corpus, num_merges):
    words = collections.Counter(SPACE + w for w in corpus.replace("\n", " ").split(" ") if w)
    splits = {w: list(w) for w in words}
    vocab = []
    for w in words:
        for c in w:
            if c not in vocab:
                vocab.append(c)
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        vocab.append(a + b)
        for w, s in splits.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return vocab, merges


def model(vocab_pieces, merges):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece in vocab_pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    return {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
            "ignore_merges": False, "vocab": vocab, "merges": [[a, b] for a, b in merges]}


def added_tokens():
    return [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, c in enumerate(["<unk>", "<s>", "</s>"])]


def post_processor():
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}


def write(name, tokenizer):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "legacy": False}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)


def main():
    pieces, merges = learn_merges(CORPUS, 160)
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(),
            "post_processor": post_processor(), "model": model(pieces, merges)}
    llama2 = dict(base)
    llama2["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]}
    llama2["pre_tokenizer"] = None
    llama2["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    write("llama2_style", llama2)

    metaspace = dict(base)
    metaspace["normalizer"] = None
    metaspace["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPACE,
                                  "prepend_scheme": "first", "split": False}
    metaspace["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    write("metaspace_style", metaspace)
    print("wrote", OUT, "(%d merges)" % len(merges))


if __name__ == "__main__":
    main()
