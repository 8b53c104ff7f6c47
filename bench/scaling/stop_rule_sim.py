#!/usr/bin/env python3
"""Replays adaptive best-of-N's stop rule on the dumped candidates of fixed best-of-16 (run.sh's
default DUMP, best_of_n_reward:16: all 16 PRM-scored samples of each problem), to choose its
threshold without a sweep per value: for each problem, random orders of its 16 samples are drawn
in rounds of 4 until LeaderConfidence (search/selection.h: P(leader beats runner-up) under
Beta(W1 + 1, W2 + 1), W the PRM-weighted votes, last-step score) reaches the threshold, then the
PRM-weighted vote over what was drawn answers. Prints accuracy and mean samples per threshold,
with the old rule (raw share >= 0.75) and fixed N=8 / N=16 for reference.

    /usr/bin/python3 bench/scaling/stop_rule_sim.py OUT_DIR/candidates.jsonl [--orders 20]
"""
import argparse
import collections
import json
import math
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def beta_above_half(a, b, steps=2000):
    """P(X > 1/2) for X ~ Beta(a, b), by the midpoint rule (a, b >= 1 here)."""
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    h = 0.5 / steps
    total = 0.0
    for i in range(steps):
        x = 0.5 + (i + 0.5) * h
        total += math.exp((a - 1) * math.log(x) + (b - 1) * math.log(1 - x) - log_norm)
    return total * h


def weighted(samples):
    w = collections.defaultdict(float)
    for answer, score in samples:
        if answer:
            w[answer] += score
    return w


def vote(samples):
    w = weighted(samples)
    return max(w.items(), key=lambda x: x[1])[0] if w else ""


def confidence(samples):
    top = sorted(weighted(samples).values(), reverse=True) + [0.0, 0.0]
    return beta_above_half(round(top[0] + 1, 3), round(top[1] + 1, 3))


def raw_share(samples):
    c = collections.Counter(a for a, _ in samples)
    return c.most_common(1)[0][1] / len(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates")
    ap.add_argument("--problems", default=os.path.join(ROOT, "models/data/heldout.jsonl"))
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--thresholds", default="0.6,0.65,0.7,0.75,0.8,0.9")
    args = ap.parse_args()
    truth = [json.loads(line)["answer"] for line in open(args.problems)]
    samples = collections.defaultdict(list)
    for line in open(args.candidates):
        j = json.loads(line)
        samples[j["problem"]].append((j["answer"], j["step_scores"][-1] if j["step_scores"] else 0.0))

    def right(p, answer):
        try:
            return int(answer) == int(truth[p])
        except ValueError:
            return False

    cache = {}

    def run(stop, n=16, rounds=4):
        rng = random.Random(1)
        correct = drawn = 0
        for p, pool in sorted(samples.items()):
            for _ in range(args.orders):
                order = pool[:]
                rng.shuffle(order)
                k = rounds
                while k < n and not stop(tuple(order[:k])):
                    k += rounds
                correct += right(p, vote(order[:k]))
                drawn += k
        runs = len(samples) * args.orders
        return correct / runs, drawn / runs

    def conf(s):
        if s not in cache:
            cache[s] = confidence(s)
        return cache[s]

    print(f"{len(samples)} problems, {args.orders} orders each, rounds of 4 up to 16")
    print("| rule | accuracy | samples/problem |\n|---|---:|---:|")
    for name, stop in [("fixed N=16", lambda s: False), ("fixed N=8", lambda s: len(s) >= 8),
                       ("raw share >= 0.75 (old rule)", lambda s: raw_share(s) >= 0.75)]:
        acc, k = run(stop)
        print(f"| {name} | {100 * acc:.1f}% | {k:.2f} |")
    for t in (float(x) for x in args.thresholds.split(",")):
        acc, k = run(lambda s, t=t: conf(s) >= t)
        print(f"| LeaderConfidence >= {t} | {100 * acc:.1f}% | {k:.2f} |")


if __name__ == "__main__":
    main()
