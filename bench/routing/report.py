#!/usr/bin/env python3
"""Table of bench/routing/run.sh's routing.jsonl (one arbor-loadgen row per
round, mix and policy): per case jobs/min, latency p50/p99, prefix-hit tokens
and ratio, and the load spread over the workers (the busiest worker's tokens
over the mean, counting workers that ran nothing; 1.0 = even); then, per mix and
policy, medians and ranges over the rounds and the per-round ratio to
rendezvous."""
import collections
import json
import statistics
import sys


def spread(row):
    tokens = [w["tokens"] for w in row.get("workers", {}).values()]
    n = max(row.get("num_workers", len(tokens)), len(tokens), 1)
    total = sum(tokens)
    return max(tokens) / (total / n) if total else 0.0


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| mix | policy | round | jobs/min | p50 s | p99 s | hit tokens | hit ratio | spread | jobs per worker |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    by = collections.defaultdict(list)
    for r in rows:
        per_worker = sorted((w["jobs"] for w in r.get("workers", {}).values()), reverse=True)
        per_worker += [0] * (r.get("num_workers", len(per_worker)) - len(per_worker))
        print(f"| {r['mix']} | {r['policy']} | {r['round']} | {r['jobs_per_min']:.1f} | "
              f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['prefix_cache_hit_tokens']} | "
              f"{r['prefix_hit_ratio']:.3f} | {spread(r):.2f} | {'/'.join(map(str, per_worker))} |"
              + (f" {r['failed']} failed" if r.get("failed") else ""))
        by[(r["mix"], r["policy"])].append(r)
    print()
    # Per mix and policy over the rounds: medians, the range (min-max), and
    # the per-round ratio to rendezvous (each round's cases ran back to back,
    # so the ratio within a round cancels most of a shared machine's drift).
    print("| mix | policy | rounds | jobs/min median (min-max) | hit tokens median (min-max) | "
          "jobs/min vs rendezvous: median of rounds (min-max) | hit tokens vs rendezvous (median) |")
    print("|---|---|---:|---|---|---|---:|")
    median = lambda xs: statistics.median(xs) if xs else 0.0
    for mix in dict.fromkeys(r["mix"] for r in rows):
        base = {r["round"]: r for r in by.get((mix, "rendezvous"), [])}
        base_hit = median([r["prefix_cache_hit_tokens"] for r in base.values()])
        for policy in dict.fromkeys(r["policy"] for r in rows if r["mix"] == mix):
            cases = by[(mix, policy)]
            jpm = [r["jobs_per_min"] for r in cases]
            hit = [r["prefix_cache_hit_tokens"] for r in cases]
            ratios = [r["jobs_per_min"] / base[r["round"]]["jobs_per_min"] for r in cases
                      if r["round"] in base and base[r["round"]]["jobs_per_min"]]
            vs_jpm = (f"{median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                      if ratios else "-")
            vs_hit = f"{median(hit) / base_hit:.2f}x" if base_hit else "-"
            print(f"| {mix} | {policy} | {len(cases)} | {median(jpm):.1f} ({min(jpm):.1f}-{max(jpm):.1f}) | "
                  f"{median(hit):.0f} ({min(hit)}-{max(hit)}) | {vs_jpm} | {vs_hit} |")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "routing-out/routing.jsonl")
