#!/usr/bin/env python3
"""The round-2 part of docs/SCALING.md from a scaling sweep (bench/scaling/run.sh OUT_DIR with
the round-2 strategies): accuracy with Wilson 95% intervals against generated tokens for MCTS,
particle Gibbs, entropic particle filtering and adaptive best-of-N next to the baselines of the
same sweep, and the token saving of adaptive best-of-N at equal accuracy. Writes between the
ROUND2 markers of SCALING.md (and prints it).

    /usr/bin/python3 bench/scaling/round2.py OUT_DIR [--docs docs] [--note TEXT] [--marker ROUND3]

--marker names the markers written between (default ROUND2; ROUND3 for the rerun after the
adaptive stop rule and the MCTS fixes).
"""
import argparse
import csv
import math
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = {
    "greedy": "greedy",
    "best_of_n_reward": "best-of-N (PRM argmax)",
    "best_of_n_weighted_vote": "best-of-N (PRM-weighted vote)",
    "best_of_n_adaptive_reward": "adaptive best-of-N (PRM argmax)",
    "best_of_n_adaptive_weighted_vote": "adaptive best-of-N (PRM-weighted vote)",
    "beam_search": "beam search",
    "dvts": "DVTS",
    "particle_filter": "particle filter",
    "particle_filter_entropic": "particle filter (entropic)",
    "particle_gibbs": "particle Gibbs (2 sweeps of N/2)",
    "mcts": "MCTS (N simulations, width min(2, N), sampled rollouts)",
}
# Each adaptive row is judged against its fixed counterpart.
ADAPTIVE = {"best_of_n_adaptive_weighted_vote": "best_of_n_weighted_vote",
            "best_of_n_adaptive_reward": "best_of_n_reward"}


def wilson(k, n, z=1.96):
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["n"] = int(r["n"])
        r["problems"] = int(r["problems"])
        r["correct"] = round(float(r["accuracy"]) * r["problems"])
        r["tokens"] = float(r["generated_tokens_per_problem"])
        r["lo"], r["hi"] = wilson(r["correct"], r["problems"])
    return rows


def pct(x):
    return f"{100 * x:.1f}%"


def table(rows):
    out = ["| strategy | N | accuracy | Wilson 95% | generated tok/problem | reward tok/problem | "
           "budget-exhausted jobs |", "|---|---:|---:|---|---:|---:|---:|"]
    for s in LABELS:
        for r in sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["n"]):
            out.append(f"| {LABELS[s]} | {r['n']} | {pct(r['correct'] / r['problems'])} | "
                       f"[{pct(r['lo'])}, {pct(r['hi'])}] | {r['tokens']:.0f} | "
                       f"{float(r['reward_tokens_per_problem']):.0f} | {r['budget_exhausted']} |")
    return "\n".join(out)


def checks(rows):
    get = {(r["strategy"], r["n"]): r for r in rows}
    lines = []
    for adaptive, fixed in ADAPTIVE.items():
        base = get.get((fixed, 16))
        if base is None:
            continue
        acc16 = base["correct"] / base["problems"]
        # The cheapest adaptive configuration whose accuracy lies within the fixed N=16
        # interval (equal accuracy within noise) or above it.
        found = [r for r in sorted((r for r in rows if r["strategy"] == adaptive),
                                   key=lambda r: r["tokens"])
                 if r["correct"] / r["problems"] >= base["lo"]]
        if not found:
            best = [r for r in rows if r["strategy"] == adaptive]
            detail = ", ".join(f"N={r['n']}: {pct(r['correct'] / r['problems'])} at "
                               f"{r['tokens']:.0f} tok" for r in sorted(best, key=lambda r: r["n"]))
            lines.append(f"- {LABELS[adaptive]}: no configuration reaches fixed N=16's "
                         f"{pct(acc16)} (interval from {pct(base['lo'])}): {detail} "
                         f"(goal <= 50% of the tokens: NOT met).")
            continue
        r = found[0]
        share = r["tokens"] / base["tokens"]
        lines.append(f"- {LABELS[adaptive]} with N up to {r['n']}: {pct(r['correct'] / r['problems'])} "
                     f"[{pct(r['lo'])}, {pct(r['hi'])}] at {r['tokens']:.0f} tok/problem against "
                     f"fixed N=16's {pct(acc16)} [{pct(base['lo'])}, {pct(base['hi'])}] at "
                     f"{base['tokens']:.0f}: **{100 * share:.0f}% of the tokens** (goal <= 50%: "
                     f"{'met' if share <= 0.5 else 'NOT met'}).")
    # MCTS against the best strategy at (about) equal tokens: the best row whose tokens are
    # within 25% of MCTS's.
    for r in sorted((r for r in rows if r["strategy"] == "mcts"), key=lambda r: r["n"]):
        peers = [p for p in rows if p["strategy"] != "mcts" and
                 abs(p["tokens"] - r["tokens"]) <= 0.25 * r["tokens"]]
        if not peers:
            continue
        best = max(peers, key=lambda p: p["correct"] / p["problems"])
        acc = r["correct"] / r["problems"]
        within = acc >= best["lo"]
        lines.append(f"- MCTS N={r['n']}: {pct(acc)} at {r['tokens']:.0f} tok; best within 25% of "
                     f"its tokens: {LABELS.get(best['strategy'], best['strategy'])} N={best['n']} "
                     f"{pct(best['correct'] / best['problems'])} [{pct(best['lo'])}, "
                     f"{pct(best['hi'])}] at {best['tokens']:.0f} tok (within its interval: "
                     f"{'yes' if within else 'no'}).")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--note", default="")
    ap.add_argument("--marker", default="ROUND2")
    args = ap.parse_args()
    begin, end = f"<!-- {args.marker}:BEGIN -->", f"<!-- {args.marker}:END -->"
    rows = load(os.path.join(args.out_dir, "scaling.csv"))
    measured = "\n\n".join(x for x in [args.note, checks(rows), table(rows)] if x)
    doc = os.path.join(args.docs, "SCALING.md")
    text = open(doc).read()
    if begin in text and end in text:
        text = text[:text.index(begin) + len(begin)] + "\n" + measured + "\n" + text[text.index(end):]
        with open(doc, "w") as f:
            f.write(text)
    print(measured)


if __name__ == "__main__":
    main()
