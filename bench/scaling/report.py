#!/usr/bin/env python3
"""Turns a scaling sweep (bench/scaling/run.sh OUT_DIR) into docs/: scaling.csv, scaling.png
(accuracy against generated tokens per problem, one line per strategy), and the measured part of
SCALING.md (the table and the issue-7 quality checks, between the MEASURED markers).

The PRM step-level AUROC is computed from OUT_DIR/candidates.jsonl: policy samples (steps and the
per-step scores the C++ verifier gave them, as returned by the coordinator), each step labelled
with the exact checker of tools/train_reference/task.py (a step is right iff it and every earlier
step equal the reference steps).

    /usr/bin/python3 bench/scaling/report.py OUT_DIR [--docs docs] [--note TEXT]
"""
import argparse
import csv
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train_reference"))
import task  # noqa: E402  (the exact step checker)

BEGIN, END = "<!-- MEASURED:BEGIN -->", "<!-- MEASURED:END -->"
LABELS = {
    "greedy": "greedy",
    "best_of_n_reward": "best-of-N (PRM argmax)",
    "best_of_n_weighted_vote": "best-of-N (PRM-weighted vote)",
    "majority_vote": "majority vote",
    "beam_search": "beam search",
    "dvts": "DVTS",
    "particle_filter": "particle filter",
}


def auroc(scores_pos, scores_neg):
    """Probability that a random right step outscores a random wrong one (ties count half)."""
    if not scores_pos or not scores_neg:
        return float("nan")
    merged = sorted([(s, 1) for s in scores_pos] + [(s, 0) for s in scores_neg])
    rank_sum, i = 0.0, 0
    while i < len(merged):  # average ranks over ties
        j = i
        while j < len(merged) and merged[j][0] == merged[i][0]:
            j += 1
        avg = (i + 1 + j) / 2.0
        rank_sum += avg * sum(1 for k in range(i, j) if merged[k][1] == 1)
        i = j
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def step_auroc(path):
    pos, neg, solutions, problems = [], [], 0, set()
    with open(path) as f:
        for line in f:
            c = json.loads(line)
            steps, scores = c["steps"], c["step_scores"]
            if not scores:
                continue
            labels = task.check_steps(c["question"], steps)
            solutions += 1
            problems.add(c["problem"])
            for label, score in zip(labels, scores):
                (pos if label else neg).append(score)
    return auroc(pos, neg), len(pos), len(neg), solutions, len(problems)


def load_rows(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["n"] = int(r["n"])
        for k in ("accuracy", "generated_tokens_per_problem", "reward_tokens_per_problem",
                  "wall_ms_per_problem", "sweep_wall_s"):
            r[k] = float(r[k])
    return rows


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for strategy in LABELS:
        pts = sorted((r["generated_tokens_per_problem"], r["accuracy"], r["n"])
                     for r in rows if r["strategy"] == strategy)
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [100 * p[1] for p in pts]
        style = dict(marker="*", markersize=14, linestyle="none") if len(pts) == 1 else \
            dict(marker="o", markersize=4)
        ax.plot(xs, ys, label=LABELS[strategy], **style)
        if len(pts) > 1:
            for x, y, (_, _, n) in zip(xs, ys, pts):
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (log scale)")
    ax.set_ylabel("accuracy on held-out problems (%)")
    ax.set_title("Arbor: accuracy against generated tokens (labels: N)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(rows):
    out = ["| strategy | N | accuracy | generated tok/problem | reward tok/problem | "
           "job wall ms (mean) | failed |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for strategy in LABELS:
        for r in sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["n"]):
            out.append(f"| {LABELS[strategy]} | {r['n']} | {100 * r['accuracy']:.1f}% | "
                       f"{r['generated_tokens_per_problem']:.0f} | "
                       f"{r['reward_tokens_per_problem']:.0f} | {r['wall_ms_per_problem']:.0f} | "
                       f"{r['failed']} |")
    return "\n".join(out)


def checks(rows, auc):
    get = {(r["strategy"], r["n"]): r for r in rows}
    lines = []
    greedy = get.get(("greedy", 1))
    if greedy:
        g = 100 * greedy["accuracy"]
        lines.append(f"- Greedy accuracy: **{g:.1f}%** (bar: 25-65%: "
                     f"{'met' if 25 <= g <= 65 else 'NOT met'}).")
    a, npos, nneg, nsol, nprob = auc
    if nsol:
        lines.append(f"- PRM step-level AUROC on policy samples: **{a:.3f}** over {npos} right and "
                     f"{nneg} wrong steps ({nsol} solutions of {nprob} problems) (bar: >= 0.90: "
                     f"{'met' if a >= 0.90 else 'NOT met'}).")
    at16 = [r for r in rows if r["n"] == 16]
    if greedy and at16:
        best = max(at16, key=lambda r: r["accuracy"])
        gain = 100 * (best["accuracy"] - greedy["accuracy"])
        lines.append(f"- Best strategy at N=16: {LABELS[best['strategy']]} "
                     f"{100 * best['accuracy']:.1f}%, **{gain:+.1f} points** over greedy (bar: "
                     f">= +20: {'met' if gain >= 20 else 'NOT met'}).")
    pf = sorted((r for r in rows if r["strategy"] == "particle_filter"), key=lambda r: r["n"])
    bon = sorted((r for r in rows if r["strategy"] == "best_of_n_reward"), key=lambda r: r["n"])
    if pf and bon:
        # At PF's generated-token budget: best-of-N(reward) interpolated in log-tokens.
        import math
        verdicts = []
        for p in pf:
            t = p["generated_tokens_per_problem"]
            below = [b for b in bon if b["generated_tokens_per_problem"] <= t]
            above = [b for b in bon if b["generated_tokens_per_problem"] >= t]
            if not below or not above:
                continue
            lo, hi = below[-1], above[0]
            if hi["generated_tokens_per_problem"] == lo["generated_tokens_per_problem"]:
                acc = lo["accuracy"]
            else:
                w = (math.log(t) - math.log(lo["generated_tokens_per_problem"])) / (
                    math.log(hi["generated_tokens_per_problem"]) -
                    math.log(lo["generated_tokens_per_problem"]))
                acc = lo["accuracy"] + w * (hi["accuracy"] - lo["accuracy"])
            verdicts.append((p["n"], t, p["accuracy"], acc))
        if verdicts:
            met = sum(1 for v in verdicts if v[2] >= v[3])
            detail = "; ".join(f"N={n}: {100 * pa:.1f}% vs {100 * ba:.1f}% at {t:.0f} tok"
                               for n, t, pa, ba in verdicts)
            lines.append(f"- Particle filter against best-of-N (PRM argmax) at the same generated "
                         f"tokens (best-of-N interpolated in log tokens): {detail} "
                         f"({met}/{len(verdicts)} budgets met).")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--note", default="", help="how and where the sweep ran (goes into the doc)")
    args = ap.parse_args()
    rows = load_rows(os.path.join(args.out_dir, "scaling.csv"))
    cand = os.path.join(args.out_dir, "candidates.jsonl")
    auc = step_auroc(cand) if os.path.exists(cand) else (float("nan"), 0, 0, 0, 0)
    os.makedirs(args.docs, exist_ok=True)
    shutil.copyfile(os.path.join(args.out_dir, "scaling.csv"),
                    os.path.join(args.docs, "scaling.csv"))
    try:
        plot(rows, os.path.join(args.docs, "scaling.png"))
    except ImportError:
        print("report.py: no matplotlib (apt-get install python3-matplotlib); no plot",
              file=sys.stderr)
    measured = "\n\n".join(x for x in [args.note, checks(rows, auc), table(rows)] if x)
    with open(os.path.join(args.out_dir, "measured.md"), "w") as f:
        f.write(measured + "\n")
    doc = os.path.join(args.docs, "SCALING.md")
    if os.path.exists(doc):
        text = open(doc).read()
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN) + len(BEGIN)] + "\n" + measured + "\n" + \
                text[text.index(END):]
            with open(doc, "w") as f:
                f.write(text)
    print(measured)


if __name__ == "__main__":
    main()
