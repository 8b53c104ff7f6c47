#!/usr/bin/env python3
"""Merges model_bench's and hf_baseline.py's JSON into one markdown table.

    bench/model/report.py --arbor arbor.json --hf hf.json --out model_bench.md

Rows: decode at each batch, prefill. Columns: Arbor tok/s, its limit and the
fraction of it, transformers tok/s, Arbor / transformers, and issue 8's
targets (batch-1 decode >= 60% of the bandwidth limit and >= 5x transformers,
batch-64 decode >= 3x transformers, prefill >= 40% of the GEMM rate) with
met / not met. Either file may be missing (a step that failed): its columns
read "-". Prints the table last and writes it to --out.
"""
import argparse
import json
import os


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def key(row):
    return (row["kind"], row.get("batch", 1) if row["kind"] == "decode" else row["tokens"])


# (kind, batch or tokens) -> [(description, check(arbor_row, ratio) -> bool or None)]
def targets(prefill_tokens):
    def fraction_at_least(f):
        return lambda a, ratio: None if a is None else a["fraction_of_limit"] >= f

    def ratio_at_least(x):
        return lambda a, ratio: None if ratio is None else ratio >= x

    return {
        ("decode", 1): [(">= 60% of bandwidth limit", fraction_at_least(0.60)),
                        (">= 5x transformers", ratio_at_least(5.0))],
        ("decode", 64): [(">= 3x transformers", ratio_at_least(3.0))],
        ("prefill", prefill_tokens): [(">= 40% of GEMM rate", fraction_at_least(0.40))],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arbor", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    arbor, hf = load(args.arbor), load(args.hf)
    arbor_rows = {key(r): r for r in (arbor or {}).get("rows", [])}
    hf_rows = {key(r): r for r in (hf or {}).get("rows", [])}
    order = list(arbor_rows) + [k for k in hf_rows if k not in arbor_rows]
    prefill_tokens = next((k[1] for k in order if k[0] == "prefill"), 8192)
    goals = targets(prefill_tokens)
    prompt = (arbor or hf or {}).get("prompt_tokens", "?")

    lines = []
    if arbor:
        lim = arbor["limits"]
        lines.append(f"Device: {arbor['device']}; limits measured in the same run: copy "
                     f"{lim['copy_gbps']:.0f} GB/s (read + write), bf16 GEMM "
                     f"{lim['gemm_tflops']:.0f} TFLOP/s (cuBLAS 8192^3).")
        lines += [f"- {f}" for f in arbor["formulas"]]
    if hf:
        lines.append(f"transformers {hf['transformers']}, torch {hf['torch']}, attention "
                     f"{hf['attn_implementation']}; {hf['method']}.")
    lines.append(f"Decode: {prompt}-token random prompts, greedy, EOS ignored; Arbor times the "
                 "same N - 1 decode steps that generate(N) - generate(1) times.")
    lines.append("")
    lines.append("| measurement | Arbor tok/s | limit tok/s | Arbor % of limit | transformers tok/s "
                 "| Arbor / transformers | Arbor without CUDA graphs | Arbor without dependent "
                 "launch | target | met |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for k in order:
        a, h = arbor_rows.get(k), hf_rows.get(k)
        ratio = a["tokens_per_s"] / h["tokens_per_s"] if a and h else None
        if k[0] == "decode":
            name = f"decode batch {k[1]} ({prompt} + {(a or h)['tokens']})"
        else:
            name = f"prefill {k[1]} tokens"
        checks = goals.get(k, [])
        target = "; ".join(d for d, _ in checks) or "-"
        results = [check(a, ratio) for _, check in checks]
        if not checks:
            met = "-"
        elif any(r is None for r in results):
            met = "unknown"
        else:
            met = "met" if all(results) else "not met (" + "; ".join(
                d for (d, _), r in zip(checks, results) if not r) + ")"
        cells = [
            name,
            f"{a['tokens_per_s']:.0f}" if a else "-",
            f"{a['limit_tokens_per_s']:.0f}" if a else "-",
            f"{100 * a['fraction_of_limit']:.1f}%" if a else "-",
            f"{h['tokens_per_s']:.0f}" if h else "-",
            f"{ratio:.2f}x" if ratio is not None else "-",
            f"{a['eager_tokens_per_s']:.0f}" if a and a.get("eager_tokens_per_s") else "-",
            f"{a['serial_tokens_per_s']:.0f}" if a and a.get("serial_tokens_per_s") else "-",
            target,
            met,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    shared = (arbor or {}).get("shared_prefix", {})
    if shared.get("rows"):
        rows = shared["rows"]
        lines.append("")
        lines.append(f"Shared prefix: {shared['branches']} branches decoding {shared['steps']} greedy "
                     "tokens each after one shared prompt (prefilled once; every branch's block "
                     "table starts with the prompt's blocks).")
        lines.append("")
        lines.append("| shared prompt | cascade tok/s | cascade without CUDA graphs | plain "
                     "per-branch tok/s | speed-up | KV blocks in use | per-branch copies would use |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in rows:
            eager = r.get("cascade_eager_tokens_per_s")
            lines.append(f"| {r['prompt']} | {r['cascade_tokens_per_s']:.0f} | "
                         f"{f'{eager:.0f}' if eager else '-'} | "
                         f"{r['plain_tokens_per_s']:.0f} | "
                         f"{r['cascade_tokens_per_s'] / r['plain_tokens_per_s']:.2f}x | "
                         f"{r['blocks_used']} | {r['blocks_if_copied']} |")
        first, last = rows[0], rows[-1]
        fall = 1 - last["cascade_tokens_per_s"] / first["cascade_tokens_per_s"]
        plain_fall = 1 - last["plain_tokens_per_s"] / first["plain_tokens_per_s"]
        lines.append("")
        lines.append(f"From {first['prompt']} to {last['prompt']} shared tokens the cascade's "
                     f"throughput falls {100 * fall:.1f}% (target <= 15%: "
                     f"{'met' if fall <= 0.15 else 'not met'}); plain per-branch attention's "
                     f"falls {100 * plain_fall:.1f}%.")
        kernels = list(first.get("cascade_by_kernel", {}))
        default = shared.get("default_kernel")
        if default in kernels:  # the default first (JSON objects come sorted)
            kernels.remove(default)
            kernels.insert(0, default)
        if len(kernels) > 1:
            lines.append("")
            lines.append("The cascade with each group-attention kernel (tok/s; the first is the "
                         "default):")
            lines.append("")
            lines.append("| shared prompt | " + " | ".join(kernels) + " |")
            lines.append("|---|" + "---|" * len(kernels))
            for r in rows:
                lines.append(f"| {r['prompt']} | " + " | ".join(
                    f"{r['cascade_by_kernel'][k]:.0f}" for k in kernels) + " |")
            falls = ", ".join(
                f"{k} {100 * (1 - last['cascade_by_kernel'][k] / first['cascade_by_kernel'][k]):.1f}%"
                for k in kernels)
            lines.append("")
            lines.append(f"Fall from {first['prompt']} to {last['prompt']}: {falls}.")
    if not arbor:
        lines.append("\n(model_bench wrote no results)")
    if not hf:
        lines.append("\n(hf_baseline.py wrote no results)")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
