#!/usr/bin/env python3
"""Samples the worker's and verifier's /metrics while one bench/e2e case runs (every
--interval_s, until SIGTERM), then writes what the case did to the engines as JSON: mean batch
(sequences per engine step), mean step time, engine busy share of the wall time, peak KV blocks
in use and peak running sequences, decode steps by how they ran (CUDA graph replay, capture,
eager) and the decode attention keys read against each sequence's whole context. Counters are
taken as differences over the case."""
import argparse
import json
import re
import signal
import time
import urllib.request


def scrape(port):
    """{(name, role, state): value} of one /metrics page, "state" being the series' state, kind
    or graph label (other labels, such as model, summed over), or {} when it does not answer."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            name, _, labels = key.partition("{")
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            try:
                k = (name, fields.get("role", ""),
                     fields.get("state") or fields.get("kind") or fields.get("graph") or "")
                values[k] = values.get(k, 0.0) + float(value)
            except ValueError:
                pass
    return values


def series(values, name, role, state=""):
    return values.get((name, role, state), 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", required=True, help="role=port,... e.g. worker=9461,verifier=9462")
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval_s", type=float, default=0.25)
    args = ap.parse_args()
    ports = dict(p.split("=") for p in args.ports.split(","))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    start = time.monotonic()
    first = {role: scrape(port) for role, port in ports.items()}
    last = dict(first)
    peak_used = {role: 0.0 for role in ports}
    peak_running = {role: 0.0 for role in ports}
    running_at_peak_used = {role: 0.0 for role in ports}
    while not stop:
        time.sleep(args.interval_s)
        for role, port in ports.items():
            values = scrape(port)
            if not values:
                continue
            last[role] = values
            used = series(values, "arbor_engine_kv_blocks", role, "used")
            running = series(values, "arbor_engine_running_sequences", role)
            if used > peak_used[role]:
                peak_used[role] = used
                running_at_peak_used[role] = running
            peak_running[role] = max(peak_running[role], running)
    wall = time.monotonic() - start
    out = {}
    for role in ports:
        def delta(name, state=""):
            return series(last[role], name, role, state) - series(first[role], name, role, state)
        steps = delta("arbor_engine_step_seconds_count")
        decode_steps = {g: delta("arbor_engine_decode_steps_total", g)
                        for g in ("replay", "capture", "eager")}
        keys = {k: delta("arbor_engine_decode_attention_keys_total", k)
                for k in ("context", "prompt_shared", "tree_shared", "own")}
        out[role] = {
            "mean_batch": delta("arbor_engine_batch_sequences_sum") / steps if steps else 0.0,
            "mean_step_ms": 1000 * delta("arbor_engine_step_seconds_sum") / steps if steps else 0.0,
            "busy": delta("arbor_engine_step_seconds_sum") / wall if wall else 0.0,
            "steps": steps,
            "peak_kv_blocks_used": peak_used[role],
            "peak_running_sequences": peak_running[role],
            # Every referenced block but a sequence's last is full and held
            # once (the radix tree shares it), so the blocks in use hold at
            # least 16 * (used - running) distinct tokens (docs/E2E.md).
            "running_at_peak_kv": running_at_peak_used[role],
            "decode_steps": decode_steps,
            # Decode attention keys read against what one read per sequence
            # would read, and the share of it the levels below the prompt read.
            "keys_read_share": (sum(v for k, v in keys.items() if k != "context")
                                / keys["context"] if keys["context"] else None),
            "tree_shared_share": (keys["tree_shared"] / keys["context"]
                                  if keys["context"] else None),
        }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
