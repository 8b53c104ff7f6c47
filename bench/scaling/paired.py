#!/usr/bin/env python3
"""Paired comparison of two strategies on the same problems, from the
per-job answers arbor-scaling-bench writes with --answers_out:

    bench/scaling/paired.py ANSWERS.jsonl [BASELINE [OTHER]]

For every N both strategies ran at, prints each one's accuracy with its Wilson
95% interval, how many problems only one of them got right (with the exact
two-sided sign-test p-value of that split: McNemar's test), and the oracle
(share of problems where some returned candidate has the right answer, the
ceiling of any selection among the same samples). Defaults: majority_vote
against best_of_n_tournament. Best-of-N samples do not depend on the
selection (same seed, same branch seeds), so both see the same samples.
"""
import collections
import json
import math
import sys


def wilson(k, n, z=1.959964):
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def sign_test(a, b):
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def main():
    path = sys.argv[1]
    base = sys.argv[2] if len(sys.argv) > 2 else "majority_vote"
    other = sys.argv[3] if len(sys.argv) > 3 else "best_of_n_tournament"
    rows = collections.defaultdict(dict)  # (strategy, n) -> problem -> row
    for line in open(path):
        r = json.loads(line)
        rows[(r["strategy"], r["n"])][r["problem"]] = r
    ns = sorted({n for (s, n) in rows if s == base} & {n for (s, n) in rows if s == other})
    print("| N | problems | %s | %s | only %s right | only %s right | sign-test p | oracle |"
          % (base, other, base, other))
    print("|---:|---:|---|---|---:|---:|---:|---:|")
    for n in ns:
        a, b = rows[(base, n)], rows[(other, n)]
        problems = sorted(set(a) & set(b))
        m = len(problems)
        ka = sum(a[p]["correct"] for p in problems)
        kb = sum(b[p]["correct"] for p in problems)
        only_a = sum(a[p]["correct"] and not b[p]["correct"] for p in problems)
        only_b = sum(b[p]["correct"] and not a[p]["correct"] for p in problems)
        oracle = sum(a[p]["oracle"] or b[p]["oracle"] for p in problems)
        la, ha = wilson(ka, m)
        lb, hb = wilson(kb, m)
        print("| %d | %d | %.1f%% [%.1f, %.1f] | %.1f%% [%.1f, %.1f] | %d | %d | %.3f | %.1f%% |"
              % (n, m, 100 * ka / m, 100 * la, 100 * ha, 100 * kb / m, 100 * lb, 100 * hb,
                 only_a, only_b, sign_test(only_a, only_b), 100 * oracle / m))


if __name__ == "__main__":
    main()
