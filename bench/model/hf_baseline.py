#!/usr/bin/env python3
"""Hugging Face transformers baseline for bench/model, on the GPU machine.

Builds a randomly initialised LlamaForCausalLM of Llama-3.2-1B's shape (no
download: LlamaConfig from scratch, torch.manual_seed, initialised on the GPU),
saves it in bf16 with save_pretrained (safetensors) for model_bench, then times
on the same GPU:

  decode   model.generate at each batch size: random prompts of --prompt_tokens
           ids, attention_mask ones, greedy (do_sample=False), EOS ignored
           (eos_token_id None, min_new_tokens = max_new_tokens), default cache.
           generate(N) runs one prefill forward and N - 1 decode forwards;
           generate(1) runs the prefill alone. So
               decode tok/s = batch * (N - 1) / (t(generate N) - t(generate 1))
           times the decode forwards only (generation's per-call setup cancels
           too). model_bench times the same N - 1 steps.
  prefill  one forward of --prefill_tokens ids under torch.no_grad (KV cache
           on, logits_to_keep=1: only the last row's logits, as a serving
           prefill and model_bench compute).

Every figure is a median of --repeats timings after a warm-up, with
torch.cuda.synchronize around each. Writes --json_out after every
measurement, so a run cut short keeps what it measured.

    python3 bench/model/hf_baseline.py --save /tmp/llama1b --json_out hf.json
"""
import argparse
import json
import os
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# Llama-3.2-1B (meta-llama/Llama-3.2-1B config.json).
ROPE_THETA = 500000.0
ROPE_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def llama_1b_config():
    shape = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                 num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                 head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
                 tie_word_embeddings=True, hidden_act="silu", bos_token_id=128000,
                 eos_token_id=128001, attention_bias=False, mlp_bias=False)
    if int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 keeps rope_theta inside rope_parameters.
        return LlamaConfig(rope_parameters={"rope_theta": ROPE_THETA, **ROPE_SCALING}, **shape)
    return LlamaConfig(rope_theta=ROPE_THETA, rope_scaling=dict(ROPE_SCALING), **shape)


def build_and_save(path, seed):
    torch.manual_seed(seed)
    config = llama_1b_config()
    start = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    print(f"hf_baseline: built {params / 1e9:.3f} B parameters in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    model.save_pretrained(path, safe_serialization=True)
    print(f"hf_baseline: saved to {path} in {time.perf_counter() - start:.1f} s", flush=True)
    # What runtime/model/model_config.cc needs: a bf16 dtype and Llama-3 RoPE, in
    # either dialect (transformers 5: rope_parameters; Hub: rope_theta +
    # rope_scaling).
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        saved = json.load(f)
    rope = saved.get("rope_parameters") or dict(saved.get("rope_scaling") or {},
                                                rope_theta=saved.get("rope_theta"))
    if rope.get("rope_theta") != ROPE_THETA or rope.get("rope_type", rope.get("type")) != "llama3":
        raise SystemExit(f"hf_baseline: config.json has unexpected RoPE settings: {rope}")
    if saved.get("dtype", saved.get("torch_dtype")) != "bfloat16":
        saved["dtype"] = "bfloat16"  # the tensors are; say so for the loader
        with open(config_path, "w") as f:
            json.dump(saved, f, indent=2)
    return model, params


def timed(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--save", required=True, help="folder the model is saved to")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--prompt_tokens", type=int, default=128)
    ap.add_argument("--decode_tokens", type=int, default=128)
    ap.add_argument("--prefill_tokens", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json_out", default="")
    args = ap.parse_args()
    assert args.decode_tokens >= 2

    model, params = build_and_save(args.save, args.seed)
    # EOS ignored: no eos id at all, and exactly decode_tokens new tokens.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    device = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__,
           "attn_implementation": getattr(model.config, "_attn_implementation", None),
           "parameters": params, "prompt_tokens": args.prompt_tokens,
           "method": "decode tok/s = batch * (N - 1) / (t(generate N) - t(generate 1)); "
                     "prefill tok/s = T / t(forward of T tokens, logits_to_keep=1)",
           "rows": []}

    def write():
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(out, f, indent=2)

    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    n = args.decode_tokens
    for batch in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt_tokens),
                            generator=gen).to(device)
        mask = torch.ones_like(ids)

        def generate(new_tokens):
            with torch.no_grad():
                result = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        eos_token_id=None, pad_token_id=0, use_cache=True)
            assert result.shape == (batch, args.prompt_tokens + new_tokens), result.shape
            return result

        t_n, all_n = timed(lambda: generate(n), args.repeats)
        t_1, all_1 = timed(lambda: generate(1), args.repeats)
        tok_s = batch * (n - 1) / (t_n - t_1)
        print(f"hf_baseline: decode batch {batch:4d}: {tok_s:9.0f} tok/s "
              f"(generate {n}: {t_n:.3f} s, generate 1: {t_1:.3f} s, "
              f"{(t_n - t_1) / (n - 1) * 1e3:.2f} ms/step)", flush=True)
        out["rows"].append({"kind": "decode", "batch": batch, "tokens": n,
                            "tokens_per_s": tok_s, "generate_n_seconds": all_n,
                            "generate_1_seconds": all_1})
        write()
        del ids, mask
        torch.cuda.empty_cache()

    ids = torch.randint(0, model.config.vocab_size, (1, args.prefill_tokens),
                        generator=gen).to(device)

    def forward():
        with torch.no_grad():
            return model(input_ids=ids, use_cache=True, logits_to_keep=1).logits

    t, all_t = timed(forward, max(args.repeats, 5), warmup=2)
    tok_s = args.prefill_tokens / t
    print(f"hf_baseline: prefill {args.prefill_tokens} tokens: {tok_s:9.0f} tok/s "
          f"({t * 1e3:.1f} ms)", flush=True)
    out["rows"].append({"kind": "prefill", "batch": 1, "tokens": args.prefill_tokens,
                        "tokens_per_s": tok_s, "seconds": all_t})
    write()


if __name__ == "__main__":
    main()
