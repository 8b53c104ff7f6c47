#!/usr/bin/env python3
"""Turns bench/e2e/run.sh's rows (one JSON object per case, from arbor-loadgen) into the
markdown table of docs/E2E.md: per case, throughput, latency, cache hit ratios, GPU busy, and
the speed-up over each baseline of the same case: prefix cache off ("nocache_" + label), the
search-and-learn loop ("sal_", "nocache_sal_") and the prompt-only cascade ("lvl1_"); an fp8
KV cache's rows ("fp8_" + label on worker and verifier, "fp8w_" + label on the worker only)
and arbor-allinone's ("one_" + label: the three roles in one process; "onep_" + label: the same
with the policy's CUDA stream at the greatest priority) give their speed-up over the main row."""
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
    head = ("| case | driver | strategy | N | prompt words | load | jobs | jobs/min | gen tok/s"
            " | reward tok/s | p50 s | p99 s | prefix hit | reward hit | reward/new tok"
            " | worker batch (fill) | worker busy | peak KV blocks (over unique tok) | GPU busy"
            " | vs cache off | vs s&l | vs s&l, cache off | vs 1-level cascade"
            " | vs its main row (fp8_, fp8w_, one_, onep_) |")
    lines = [f"Device: {args.device}" if args.device else "", "", head,
             "|" + "---|" * (head.count("|") - 1)]

    def speedup(r, prefix):
        base = by_label.get(prefix + r["label"])
        if base is None or base is r or not base["jobs_per_min"] > 0:
            return ""
        return f"{r['jobs_per_min'] / base['jobs_per_min']:.2f}x"

    for r in rows:
        load = f"c={r['concurrency']}" if r["mode"] == "closed" else f"{r['rate']}/s open"
        busy = f"{r['gpu_busy']:.0%}" if r.get("gpu_busy") is not None else ""
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        worker = (r.get("engines") or {}).get("worker") or {}
        live = r["concurrency"] * r["n"] if r["mode"] == "closed" else 0
        batch = ""
        if worker.get("steps"):
            batch = f"{worker['mean_batch']:.0f}"
            if live:
                batch += f" ({worker['mean_batch'] / live:.0%})"
        # Reward tokens run per generated token: the verifier's share of new
        # work (1.0 = every step token once, plus templates and questions).
        reward_per_new = (f"{r['reward_tokens'] / r['generated_tokens']:.2f}"
                          if r["generated_tokens"] else "")
        worker_busy = f"{worker['busy']:.0%}" if worker else ""
        peak_kv = f"{worker['peak_kv_blocks_used']:.0f}" if worker else ""
        # At most one block per running sequence (its last: partial, or a
        # copy-on-write copy of a shared partial block) holds no token of its
        # own; every other referenced block holds 16 distinct tokens.
        running = worker.get("running_at_peak_kv")
        if worker and running is not None and worker["peak_kv_blocks_used"] > running:
            peak_kv += f" (≤ {running / (worker['peak_kv_blocks_used'] - running):.1%})"
        plain = not r["label"].startswith(("nocache_", "sal_", "lvl1_", "fp8_", "fp8w_", "one_",
                                                "onep_"))
        # A variant of a main row (another KV dtype, or all roles in one
        # process): its speed-up over that row.
        variant_gain = ""
        prefix = next((p for p in ("fp8_", "fp8w_", "one_", "onep_") if r["label"].startswith(p)), None)
        main = by_label.get(r["label"][len(prefix):]) if prefix else None
        if main is not None and main["jobs_per_min"] > 0:
            variant_gain = f"{r['jobs_per_min'] / main['jobs_per_min']:.2f}x"
        cells = [r["label"], r.get("driver", "coordinator"), r["strategy"], r["n"],
                 r["prompt_words"], load, f"{r['jobs']}{failed}", f"{r['jobs_per_min']:.1f}",
                 f"{r['generated_tok_s']:.0f}", f"{r['reward_tok_s']:.0f}", f"{r['p50_s']:.2f}",
                 f"{r['p99_s']:.2f}", f"{r['prefix_hit_ratio']:.2f}",
                 f"{r['reward_hit_ratio']:.2f}", reward_per_new, batch, worker_busy, peak_kv,
                 busy] + [speedup(r, p) if plain else "" for p in ("nocache_", "sal_",
                                                                    "nocache_sal_", "lvl1_")
                                                       ] + [variant_gain]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Where a job's time goes (shares of the jobs' summed wall time):", "",
              "| case | coordinator | network | worker queue | worker compute | verifier queue"
              " | verifier compute |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("time_shares") or {}
        cells = " | ".join(f"{s.get(k, 0):.0%}" for k in (
            "coordinator", "network", "worker_queue", "worker_compute", "verifier_queue",
            "verifier_compute"))
        lines.append(f"| {r['label']} | {cells} |")
    lines += ["", "The worker's decode steps: how they ran, and the attention keys they read against"
              " each sequence's whole context (cascade attention reads shared keys once per group):",
              "", "| case | decode steps | CUDA graph replays | captures | eager | keys read"
              " / context | read by the levels below the prompt |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        worker = (r.get("engines") or {}).get("worker") or {}
        steps = worker.get("decode_steps")
        if not steps:
            continue
        total = sum(steps.values())
        share = lambda v: f"{v / total:.0%}" if total else ""
        read, tree = worker.get("keys_read_share"), worker.get("tree_shared_share")
        lines.append(f"| {r['label']} | {total:.0f} | {share(steps['replay'])}"
                     f" | {steps['capture']:.0f} | {share(steps['eager'])}"
                     f" | {f'{read:.1%}' if read is not None else ''}"
                     f" | {f'{tree:.1%}' if tree is not None else ''} |")
    text = "\n".join(lines).strip() + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
