#!/usr/bin/env python3
"""Trains the reference policy (a small LlamaForCausalLM) on the chained-arithmetic task.

One run trains from random init to convergence (the "strong" model, the PRM's starting point)
and, on the way, keeps bf16 snapshots of the checkpoints whose greedy accuracy on a validation
split (seed 3, disjoint from train and held-out) lies in the calibration band. The policy is the
snapshot in the band with the largest gap between sampled pass@16 (T=0.8) and greedy accuracy on
validation. Held-out figures are measured only for the chosen models.

    python3 tools/train_reference/train_policy.py --out models/policy --strong-out tools/train_reference/work/strong
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import task  # noqa: E402

VALIDATION_SEED = 3


def pack(tk, problems, device):
    prompts = tk.encode_batch([common.prompt_text(p["question"]) for p in problems])
    sols = tk.encode_batch([common.solution_text(p["steps"]) for p in problems])
    seqs = [a + b + [tk.im_end] for a, b in zip(prompts, sols)]
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), tk.pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in seqs])
    prompt_lengths = torch.tensor([len(a) for a in prompts])
    return x.to(device), lengths.to(device), prompt_lengths.to(device)


def lr_at(step, total, warmup, peak, floor=0.05):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def lm_loss(model, x, lengths, prompt_lengths):
    width = int(lengths.max())
    x = x[:, :width]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(input_ids=x).logits
    pos = torch.arange(1, width, device=x.device)[None, :]
    mask = (pos >= prompt_lengths[:, None]) & (pos < lengths[:, None])
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                         x[:, 1:].reshape(-1), reduction="none").view(mask.shape)
    return (ce * mask).sum() / mask.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="models/data")
    ap.add_argument("--out", default="models/policy")
    ap.add_argument("--strong-out", default="tools/train_reference/work/strong")
    ap.add_argument("--metrics", default="tools/train_reference/work/policy_metrics.json")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--band", type=float, nargs=2, default=[0.30, 0.60])
    ap.add_argument("--target", type=float, default=0.45)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-limit", type=int, default=0, help="use only this many problems")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--strong-only", action="store_true",
                    help="only train to convergence and save --strong-out (the PRM's base)")
    args = ap.parse_args()

    clock = common.Timer()
    device = "cuda"
    common.seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    train = task.load_jsonl(os.path.join(args.data, "train.jsonl.gz"))
    if args.train_limit:
        train = train[:args.train_limit]
    heldout = task.load_jsonl(os.path.join(args.data, "heldout.jsonl"))
    validation = task.generate(VALIDATION_SEED, 500, exclude={p["question"] for p in
                                                              train + heldout})
    val_q = [p["question"] for p in validation]
    held_q = [p["question"] for p in heldout]

    tok = common.train_tokenizer(train[:20000])
    tk = common.Tok(tok)
    print(f"tokenizer: vocab {tk.vocab_size}; example "
          f"{tok.encode(common.prompt_text(train[0]['question'])).tokens[:12]}", flush=True)
    x, lengths, prompt_lengths = pack(tk, train, device)
    print(f"packed {x.shape[0]} sequences, max length {x.shape[1]}, mean "
          f"{lengths.float().mean():.1f} [{clock():.0f}s]", flush=True)

    from transformers import LlamaForCausalLM
    cfg = common.policy_config(tk, args.layers, args.intermediate)
    model = LlamaForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.1)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    history, snapshots = [], {}
    losses = []
    perm, cursor = torch.randperm(x.shape[0], generator=gen, device=device), 0
    eval_every, reached = args.eval_every, 0
    for step in range(args.steps):
        if cursor + args.batch > x.shape[0]:
            perm, cursor = torch.randperm(x.shape[0], generator=gen, device=device), 0
        idx = perm[cursor:cursor + args.batch]
        cursor += args.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        model.train()
        loss = lm_loss(model, x[idx], lengths[idx], prompt_lengths[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item() if step % 10 == 0 else None)
        done = step + 1
        if args.strong_only:
            eval_every = 1000
        if done % eval_every == 0 or done == args.steps:
            rounded = common.bf16_rounded_copy(model)
            texts, _ = common.generate(rounded, tk, val_q, temperature=0.0)
            acc = common.accuracy(val_q, texts)
            recent = [v for v in losses[-eval_every:] if v is not None]
            history.append({"step": done, "loss": sum(recent) / len(recent), "val_greedy": acc})
            print(f"step {done}: loss {history[-1]['loss']:.4f} val greedy {acc:.3f} "
                  f"lr {opt.param_groups[0]['lr']:.2e} [{clock():.0f}s]", flush=True)
            if 0.1 <= acc <= 0.8 and not args.strong_only:
                snapshots[done] = {k: v.detach().to("cpu", torch.bfloat16).clone()
                                   for k, v in model.state_dict().items()}
            reached = reached + 1 if acc > 0.85 else 0
            if reached >= 3:
                eval_every = 1000
            del rounded

    # The strong model: fully trained; the PRM starts from it.
    common.save_model(model, tk, tok, args.strong_out)
    strong = common.load_model(args.strong_out, device)
    texts, _ = common.generate(strong, tk, held_q, temperature=0.0)
    strong_held = common.accuracy(held_q, texts)
    print(f"strong model: held-out greedy {strong_held:.3f} [{clock():.0f}s]", flush=True)
    del strong
    if args.strong_only:
        metrics = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                   "warmup": args.warmup, "layers": args.layers,
                   "intermediate": args.intermediate, "parameters": n_params,
                   "history": history, "heldout_strong_greedy": strong_held, "seconds": clock()}
        os.makedirs(os.path.dirname(os.path.abspath(args.metrics)), exist_ok=True)
        with open(args.metrics, "w") as f:
            json.dump(metrics, f, indent=1)
        return

    if not snapshots:  # e.g. a smoke run too short to reach the band: keep the pipeline going
        print("WARNING: no snapshot with 0.1 <= val greedy <= 0.8; using the final model",
              flush=True)
        snapshots[history[-1]["step"]] = {k: v.detach().to("cpu", torch.bfloat16).clone()
                                          for k, v in model.state_dict().items()}
    # Calibrated policy: a snapshot in the band, best sampled/greedy gap on validation.
    lo, hi = args.band
    in_band = sorted((s for s in snapshots if lo <= next(h["val_greedy"] for h in history
                                                         if h["step"] == s) <= hi),
                     key=lambda s: abs(next(h["val_greedy"] for h in history if h["step"] == s)
                                       - args.target))[:args.candidates]
    if not in_band:
        in_band = sorted(snapshots, key=lambda s: abs(next(
            h["val_greedy"] for h in history if h["step"] == s) - args.target))[:1]
    if not in_band:
        sys.exit("no snapshot near the calibration band; change --steps/--lr")
    candidates = []
    for s in sorted(in_band):
        model.load_state_dict({k: v.float() for k, v in snapshots[s].items()})
        rounded = common.bf16_rounded_copy(model)
        greedy_acc = next(h["val_greedy"] for h in history if h["step"] == s)
        samples, _ = common.generate(rounded, tk, val_q, samples=16,
                                     temperature=common.TEMPERATURE, seed=args.seed)
        p16 = common.pass_at_n(val_q, samples, 16)
        candidates.append({"step": s, "val_greedy": greedy_acc, "val_pass16": p16})
        print(f"candidate step {s}: val greedy {greedy_acc:.3f} pass@16 {p16:.3f} "
              f"[{clock():.0f}s]", flush=True)
    best = max(candidates, key=lambda c: (c["val_pass16"] - c["val_greedy"], -c["step"]))
    model.load_state_dict({k: v.float() for k, v in snapshots[best["step"]].items()})
    common.save_model(model, tk, tok, args.out)
    policy = common.load_model(args.out, device)
    texts, _ = common.generate(policy, tk, held_q, temperature=0.0)
    held_greedy = common.accuracy(held_q, texts)
    samples, _ = common.generate(policy, tk, held_q, samples=16, temperature=common.TEMPERATURE,
                                 seed=args.seed)
    held_pass16 = common.pass_at_n(held_q, samples, 16)
    print(f"policy = step {best['step']}: held-out greedy {held_greedy:.3f} pass@16 "
          f"{held_pass16:.3f} [{clock():.0f}s]", flush=True)

    metrics = {
        "seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
        "warmup": args.warmup, "train_problems": len(train), "parameters": n_params,
        "vocab_size": tk.vocab_size, "history": history, "candidates": candidates,
        "policy_step": best["step"], "heldout_policy_greedy": held_greedy,
        "heldout_policy_pass16": held_pass16, "heldout_strong_greedy": strong_held,
        "seconds": clock(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.metrics)), exist_ok=True)
    with open(args.metrics, "w") as f:
        json.dump(metrics, f, indent=1)


if __name__ == "__main__":
    main()
