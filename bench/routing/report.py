#!/usr/bin/env python3
"""Table of bench/routing/run.sh's routing.jsonl (one row per round, mix and
policy: arbor-loadgen's figures and the processes' /metrics, bench/routing/case_row.py):
per case jobs/min, latency p50/p99, prefix-hit tokens and ratio, the load
spread over the workers (the busiest worker's tokens over the mean, counting
workers that ran nothing; 1.0 = even), the jobs per worker, the sub-trees sent
to lent workers and the sequences the workers preempted; then, per mix and
policy, medians and ranges over the rounds and the per-round ratio to the
mix's baseline (rendezvous where it ran, else the mix's first policy: the
wide mix's prefix_load without splitting).

The spread counts each worker's own prefilled and generated tokens where the
row has them (the workers' arbor_engine_tokens_total: the compute each did,
sub-trees included where they ran), else the tokens loadgen puts on each job's
worker (older rows)."""
import collections
import json
import statistics
import sys


def spread(row):
    engine = row.get("worker_engine")
    if engine:
        tokens = [w["prefill"] + w["generated"] for w in engine.values()]
    else:
        tokens = [w["tokens"] for w in row.get("workers", {}).values()]
    n = max(row.get("num_workers", len(tokens)), len(tokens), 1)
    total = sum(tokens)
    return max(tokens) / (total / n) if total else 0.0


def preemptions(row):
    engine = row.get("worker_engine")
    return sum(w["preemptions"] for w in engine.values()) if engine else None


def dash(x, fmt="{}"):
    return "-" if x is None else fmt.format(x)


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| mix | policy | round | jobs/min | p50 s | p99 s | hit tokens | hit ratio | spread | "
          "jobs per worker | sub-trees | preempted |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    by = collections.defaultdict(list)
    for r in rows:
        per_worker = sorted((w["jobs"] for w in r.get("workers", {}).values()), reverse=True)
        per_worker += [0] * (r.get("num_workers", len(per_worker)) - len(per_worker))
        print(f"| {r['mix']} | {r['policy']} | {r['round']} | {r['jobs_per_min']:.1f} | "
              f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['prefix_cache_hit_tokens']} | "
              f"{r['prefix_hit_ratio']:.3f} | {spread(r):.2f} | {'/'.join(map(str, per_worker))} | "
              f"{dash(r.get('subtrees'))} | {dash(preemptions(r))} |"
              + (f" {r['failed']} failed" if r.get("failed") else ""))
        by[(r["mix"], r["policy"])].append(r)
    print()
    # Per mix and policy over the rounds: medians, the range (min-max), and
    # the per-round ratio to the baseline (each round's cases ran back to
    # back, so the ratio within a round cancels most of a shared machine's drift).
    print("| mix | policy | rounds | jobs/min median (min-max) | p99 s median | "
          "hit tokens median (min-max) | spread median | sub-trees median | baseline | "
          "jobs/min vs baseline: median of rounds (min-max) | hit tokens vs baseline (median) |")
    print("|---|---|---:|---|---:|---|---:|---:|---|---|---:|")
    median = lambda xs: statistics.median(xs) if xs else 0.0
    for mix in dict.fromkeys(r["mix"] for r in rows):
        policies = list(dict.fromkeys(r["policy"] for r in rows if r["mix"] == mix))
        baseline = "rendezvous" if "rendezvous" in policies else policies[0]
        base = {r["round"]: r for r in by.get((mix, baseline), [])}
        base_hit = median([r["prefix_cache_hit_tokens"] for r in base.values()])
        for policy in policies:
            cases = by[(mix, policy)]
            jpm = [r["jobs_per_min"] for r in cases]
            hit = [r["prefix_cache_hit_tokens"] for r in cases]
            subtrees = [r["subtrees"] for r in cases if "subtrees" in r]
            ratios = [r["jobs_per_min"] / base[r["round"]]["jobs_per_min"] for r in cases
                      if r["round"] in base and base[r["round"]]["jobs_per_min"]]
            vs_jpm = (f"{median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                      if ratios else "-")
            vs_hit = f"{median(hit) / base_hit:.2f}x" if base_hit else "-"
            print(f"| {mix} | {policy} | {len(cases)} | "
                  f"{median(jpm):.1f} ({min(jpm):.1f}-{max(jpm):.1f}) | "
                  f"{median([r['p99_s'] for r in cases]):.2f} | "
                  f"{median(hit):.0f} ({min(hit)}-{max(hit)}) | "
                  f"{median([spread(r) for r in cases]):.2f} | "
                  f"{f'{median(subtrees):.0f}' if subtrees else '-'} | {baseline} | "
                  f"{vs_jpm} | {vs_hit} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "routing-out/routing.jsonl")
