#!/usr/bin/env python3
"""Trains the reference PRM: a token-logit process reward model, Math-Shepherd style.

Data: the calibrated policy's own samples (8 per problem, temperature 0.8) on fresh problems
(seed 4, disjoint from train, validation and held-out), every step labelled by the exact checker
(a step is correct iff it and every step before it are correct). Options tried and not used for
the bundled PRM (see docs/MODELS.md): --dedupe, --synthetic N (reference solutions of other fresh
problems, seed 5, with one plausible mistake planted by task.corrupt), --keep best (the
checkpoint with the best step AUROC on policy samples of the validation split, seed 3). Input: the policy's chat prompt, then each step
followed by the step tag <|step|>, steps joined by "\\n\\n" (common.prm_text). Target: at each tag
position, "+" for a correct step and "-" for a wrong one (a two-way cross-entropy over the logits
of "+" and "-"). The model starts from the fully trained policy-like checkpoint (a PRM from random
init only learns the label prior). Writes models/prm/ (HF layout, bf16) and prm_config.json.

    python3 tools/train_reference/train_prm.py --policy models/policy --init tools/train_reference/work/strong \\
        --out models/prm
"""
import argparse
import json
import os
import random
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import eval_reference  # noqa: E402
import task  # noqa: E402
from train_policy import VALIDATION_SEED, lr_at  # noqa: E402

PRM_PROBLEMS_SEED = 4
SYNTHETIC_SEED = 5
MAX_STEPS_PER_SOLUTION = 12
MAX_LEN = 320


def build_examples(tk, items):
    """items: [(question, steps)] -> token ids, tag positions, labels (exact checker)."""
    items = [(q, steps[:MAX_STEPS_PER_SOLUTION]) for q, steps in items if steps]
    encoded = tk.encode_batch([common.prm_text(q, steps) for q, steps in items])
    seqs, tags, labels = [], [], []
    for (q, steps), ids in zip(items, encoded):
        if len(ids) > MAX_LEN:
            continue
        pos = [i for i, t in enumerate(ids) if t == tk.step_tag]
        assert len(pos) == len(steps), (q, steps)
        seqs.append(ids)
        tags.append(pos)
        labels.append(task.check_steps(q, steps))
    return seqs, tags, labels


def pack(tk, seqs, tags, labels, device):
    width = max(len(s) for s in seqs)
    ntag = max(len(t) for t in tags)
    x = torch.full((len(seqs), width), tk.pad, dtype=torch.long)
    tp = torch.zeros((len(seqs), ntag), dtype=torch.long)
    ty = torch.full((len(seqs), ntag), -1, dtype=torch.long)
    for i, (s, t, y) in enumerate(zip(seqs, tags, labels)):
        x[i, :len(s)] = torch.tensor(s)
        tp[i, :len(t)] = torch.tensor(t)
        ty[i, :len(y)] = torch.tensor([int(v) for v in y])
    lengths = torch.tensor([len(s) for s in seqs])
    return x.to(device), tp.to(device), ty.to(device), lengths.to(device)


def prm_loss(model, tk, x, tp, ty, lengths):
    width = int(lengths.max())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        hidden = model.model(input_ids=x[:, :width]).last_hidden_state
    # Only the "+"/"-" rows of the LM head at the tag positions matter.
    h = torch.gather(hidden, 1, tp[:, :, None].expand(-1, -1, hidden.shape[-1])).float()
    w = model.lm_head.weight[[tk.positive, tk.negative]].float()
    logits = h @ w.T  # [batch, tags, 2]
    diff = logits[..., 0] - logits[..., 1]
    mask = ty >= 0
    loss = F.binary_cross_entropy_with_logits(diff[mask], ty[mask].float())
    acc = ((diff[mask] > 0) == (ty[mask] == 1)).float().mean()
    return loss, acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="models/policy")
    ap.add_argument("--init", default="tools/train_reference/work/strong")
    ap.add_argument("--out", default="models/prm")
    ap.add_argument("--data", default="models/data")
    ap.add_argument("--metrics", default="tools/train_reference/work/prm_metrics.json")
    ap.add_argument("--problems", type=int, default=40000)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--val-samples", type=int, default=4)
    ap.add_argument("--dedupe", action="store_true",
                    help="keep each distinct policy solution of a problem once")
    ap.add_argument("--synthetic", type=int, default=0,
                    help="corrupted reference solutions added to the policy samples")
    ap.add_argument("--keep", choices=["final", "best"], default="final",
                    help="final checkpoint, or the one with the best validation step AUROC")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()

    clock = common.Timer()
    device = "cuda"
    common.seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = common.load_tokenizer(args.policy)
    tk = common.Tok(tok)
    train = task.load_jsonl(os.path.join(args.data, "train.jsonl.gz"))
    heldout = task.load_jsonl(os.path.join(args.data, "heldout.jsonl"))
    taken = {p["question"] for p in train + heldout}
    validation = task.generate(VALIDATION_SEED, 500, exclude=taken)
    taken |= {p["question"] for p in validation}
    prm_problems = task.generate(PRM_PROBLEMS_SEED, args.problems, exclude=taken)
    questions = [p["question"] for p in prm_problems]
    val_q = [p["question"] for p in validation]

    policy = common.load_model(args.policy, device)
    samples, _ = common.generate(policy, tk, questions, samples=args.samples,
                                 temperature=common.TEMPERATURE, seed=args.seed)
    val_samples, _ = common.generate(policy, tk, val_q, samples=args.val_samples,
                                     temperature=common.TEMPERATURE, seed=args.seed + 1)
    del policy
    # Policy samples (optionally each distinct solution once), plus corrupted references.
    items = []
    for q, texts in zip(questions, samples):
        items += [(q, task.split_steps(t)) for t in (sorted(set(texts)) if args.dedupe else texts)]
    n_policy = len(items)
    rng = random.Random(args.seed)
    synthetic = task.generate(SYNTHETIC_SEED, args.synthetic, exclude=taken | set(questions))
    items += [(p["question"], task.corrupt(rng, p)) for p in synthetic]
    seqs, tags, labels = build_examples(tk, items)
    n_steps = sum(len(y) for y in labels)
    n_pos = sum(sum(y) for y in labels)
    print(f"PRM data: {n_policy} distinct policy solutions + {len(synthetic)} corrupted "
          f"references = {len(seqs)} solutions, {n_steps} steps, {n_pos / n_steps:.3f} correct "
          f"[{clock():.0f}s]", flush=True)
    x, tp, ty, lengths = pack(tk, seqs, tags, labels, device)

    model = common.load_model(args.init, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    perm, cursor = torch.randperm(x.shape[0], generator=gen, device=device), 0
    history, run_loss, run_acc, best = [], [], [], (-1.0, 0, None)
    for step in range(args.steps):
        if cursor + args.batch > x.shape[0]:
            perm, cursor = torch.randperm(x.shape[0], generator=gen, device=device), 0
        idx = perm[cursor:cursor + args.batch]
        cursor += args.batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        loss, acc = prm_loss(model, tk, x[idx], tp[idx], ty[idx], lengths[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            run_loss.append(loss.item())
            run_acc.append(acc.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            scores = eval_reference.score_samples(model, tk, val_q, val_samples)
            auc = eval_reference.step_auroc(val_q, val_samples, scores)[0]
            model.train()
            history.append({"step": step + 1, "loss": sum(run_loss) / len(run_loss),
                            "tag_accuracy": sum(run_acc) / len(run_acc), "val_step_auroc": auc})
            run_loss, run_acc = [], []
            if auc > best[0] or args.keep == "final":  # validation is disjoint from held-out
                best = (auc, step + 1, {k: v.detach().clone() for k, v in
                                        model.state_dict().items()})
            print(f"step {step + 1}: loss {history[-1]['loss']:.4f} tag acc "
                  f"{history[-1]['tag_accuracy']:.3f} val step AUROC {auc:.4f} "
                  f"[{clock():.0f}s]", flush=True)

    model.load_state_dict(best[2])
    model.eval()
    print(f"kept step {best[1]} (val step AUROC {best[0]:.4f})", flush=True)
    common.save_model(model, tk, tok, args.out)
    example_steps = ["17 + 25 = 42", "42 * 3 = 126", "The answer is 126"]
    prm_config = {
        "kind": "token_logit",
        "step_tag": common.STEP_TAG,
        "step_tag_id": tk.step_tag,
        "positive_token": common.POSITIVE,
        "positive_token_id": tk.positive,
        "negative_token": common.NEGATIVE,
        "negative_token_id": tk.negative,
        "step_separator": task.STEP_SEPARATOR,
        "prompt_template": "chatml",
        "format": "chatml prompt of the question (one user message, no system message, with the "
                  "assistant generation prompt), then each step stripped of surrounding "
                  "whitespace and followed by step_tag, the steps joined by step_separator",
        "example": common.prm_text("Start with 17. Add 25, multiply by 3. What is the result?",
                                   example_steps),
        "score": "sigmoid(logit[positive_token_id] - logit[negative_token_id]) at each step_tag "
                 "position = P(step correct)",
        "aggregation": "min",
    }
    with open(os.path.join(args.out, "prm_config.json"), "w") as f:
        json.dump(prm_config, f, indent=2, ensure_ascii=False)
    metrics = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "lr": args.lr,
               "warmup": args.warmup, "prm_problems": args.problems,
               "samples_per_problem": args.samples, "policy_solutions": n_policy,
               "synthetic_solutions": len(synthetic), "solutions": len(seqs),
               "kept_step": best[1], "val_step_auroc": best[0],
               "labelled_steps": n_steps, "fraction_correct": n_pos / n_steps,
               "history": history, "seconds": clock()}
    os.makedirs(os.path.dirname(os.path.abspath(args.metrics)), exist_ok=True)
    with open(args.metrics, "w") as f:
        json.dump(metrics, f, indent=1)


if __name__ == "__main__":
    main()
