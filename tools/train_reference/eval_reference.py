#!/usr/bin/env python3
"""PyTorch reference figures for the bundled models, to compare with Arbor's C++ runtime.

On the held-out split: greedy accuracy; N samples per problem at temperature 0.8 (top-k/top-p
off); the PRM's step-level AUROC against the exact step checker; and, for n = 1, 2, 4, .. N
(the first n samples of each problem), oracle pass@n, majority vote, best-of-n by PRM score
(min / last / product over steps) and PRM-weighted majority vote. Models are loaded from disk
as stored (bf16) and run in fp32.

    python3 tools/train_reference/eval_reference.py --policy models/policy --prm models/prm \\
        --n 16 --json work/eval.json
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import task  # noqa: E402


def step_items(questions, samples):
    """[(question, steps)] for every sample, steps as split by the step separator."""
    return [(q, task.split_steps(t)) for q, texts in zip(questions, samples) for t in texts]


def score_samples(prm, tk, questions, samples):
    """PRM scores shaped like samples: [problem][sample] -> [P(step correct)]."""
    items = step_items(questions, samples)
    flat = common.prm_scores(prm, tk, items)
    out, k = [], 0
    for texts in samples:
        out.append(flat[k:k + len(texts)])
        k += len(texts)
    return out


def step_auroc(questions, samples, scores):
    s, y = [], []
    for q, texts, sc in zip(questions, samples, scores):
        for t, step_scores in zip(texts, sc):
            labels = task.check_steps(q, task.split_steps(t))
            s += step_scores
            y += labels
    return common.auroc(s, y), len(y), sum(y)


def evaluate(policy, tk, prm, prm_tk, questions, n, seed, temperature=common.TEMPERATURE):
    res = {"problems": len(questions), "n": n, "temperature": temperature, "seed": seed}
    greedy, greedy_tokens = common.generate(policy, tk, questions, temperature=0.0)
    res["greedy_accuracy"] = common.accuracy(questions, greedy)
    res["greedy_tokens_per_problem"] = sum(t[0] for t in greedy_tokens) / len(questions)
    samples, tokens = common.generate(policy, tk, questions, samples=n, temperature=temperature,
                                      seed=seed)
    scores = score_samples(prm, prm_tk, questions, samples)
    auc, n_steps, n_pos = step_auroc(questions, samples, scores)
    res.update({"step_auroc": auc, "steps_scored": n_steps, "steps_correct": n_pos})
    # Greedy solutions too: AUROC on the policy's own greedy steps.
    g_scores = score_samples(prm, prm_tk, questions, greedy)
    res["greedy_step_auroc"] = step_auroc(questions, greedy, g_scores)[0]
    rows = []
    k = 1
    while k <= n:
        rows.append({
            "n": k,
            "tokens_per_problem": sum(sum(t[:k]) for t in tokens) / len(questions),
            "pass_at_n": common.pass_at_n(questions, samples, k),
            "majority": common.majority_at_n(questions, samples, k),
            "bon_prm_min": common.best_of_n(questions, samples, scores, k, "min"),
            "bon_prm_last": common.best_of_n(questions, samples, scores, k, "last"),
            "bon_prm_prod": common.best_of_n(questions, samples, scores, k, "prod"),
            "weighted_majority": common.majority_at_n(questions, samples, k, scores),
        })
        k *= 2
    res["table"] = rows
    res["dump"] = [{"question": q, "samples": texts, "tokens": toks, "prm_scores": sc,
                    "labels": [task.check_steps(q, task.split_steps(t)) for t in texts]}
                   for q, texts, toks, sc in zip(questions, samples, tokens, scores)]
    return res


def print_report(res):
    print(f"problems {res['problems']}  greedy accuracy {res['greedy_accuracy']:.3f}  "
          f"({res['greedy_tokens_per_problem']:.1f} tokens/problem)")
    print(f"PRM step AUROC {res['step_auroc']:.4f} on {res['steps_scored']} sampled steps "
          f"({res['steps_correct']} correct); on greedy steps {res['greedy_step_auroc']:.4f}")
    cols = ["n", "tokens_per_problem", "pass_at_n", "majority", "bon_prm_min", "bon_prm_last",
            "bon_prm_prod", "weighted_majority"]
    print(" | ".join(cols))
    for r in res["table"]:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="models/policy")
    ap.add_argument("--prm", default="models/prm")
    ap.add_argument("--data", default="models/data")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out problems only")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", default="", help="write the figures here")
    ap.add_argument("--dump", default="", help="write every sample, its labels and PRM scores")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    heldout = task.load_jsonl(os.path.join(args.data, "heldout.jsonl"))
    if args.limit:
        heldout = heldout[:args.limit]
    questions = [p["question"] for p in heldout]
    tk = common.Tok(common.load_tokenizer(args.policy))
    prm_tk = common.Tok(common.load_tokenizer(args.prm))
    policy = common.load_model(args.policy, device)
    prm = common.load_model(args.prm, device)
    res = evaluate(policy, tk, prm, prm_tk, questions, args.n, args.seed)
    res["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    dump = res.pop("dump")
    if args.dump:
        os.makedirs(os.path.dirname(os.path.abspath(args.dump)), exist_ok=True)
        with open(args.dump, "w") as f:
            json.dump(dump, f)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print_report(res)


if __name__ == "__main__":
    main()
