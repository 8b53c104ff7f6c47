#!/usr/bin/env python3
"""Turns bench/e2e/run.sh's rows (one JSON object per case, from arbor-loadgen) into the
markdown table of docs/E2E.md: per case, throughput, latency, cache hit ratios, GPU busy, and
the speed-up over the prefix-cache-off baseline of the same case ("nocache_" + label)."""
import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True)
    ap.add_argument("--device", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.rows) if line.strip()]
    by_label = {r["label"]: r for r in rows}
    head = ("| case | strategy | N | prompt words | load | jobs | jobs/min | gen tok/s | reward tok/s"
            " | p50 s | p99 s | prefix hit | reward hit | GPU busy | vs cache off |")
    lines = [f"Device: {args.device}" if args.device else "", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']}/s open"
        base = by_label.get("nocache_" + r["label"])
        speedup = f"{r['jobs_per_min'] / base['jobs_per_min']:.2f}x" if (
            base and base["jobs_per_min"] > 0) else ""
        busy = f"{r['gpu_busy']:.0%}" if r.get("gpu_busy") is not None else ""
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            f"| {r['label']} | {r['strategy']} | {r['n']} | {r['prompt_words']} | {load} "
            f"| {r['jobs']}{failed} | {r['jobs_per_min']:.1f} | {r['generated_tok_s']:.0f} "
            f"| {r['reward_tok_s']:.0f} | {r['p50_s']:.2f} | {r['p99_s']:.2f} "
            f"| {r['prefix_hit_ratio']:.2f} | {r['reward_hit_ratio']:.2f} | {busy} | {speedup} |")
    lines += ["", "Where a job's time goes (shares of the jobs' summed wall time):", "",
              "| case | coordinator | network | worker queue | worker compute | verifier queue"
              " | verifier compute |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("time_shares") or {}
        cells = " | ".join(f"{s.get(k, 0):.0%}" for k in (
            "coordinator", "network", "worker_queue", "worker_compute", "verifier_queue",
            "verifier_compute"))
        lines.append(f"| {r['label']} | {cells} |")
    text = "\n".join(lines).strip() + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
