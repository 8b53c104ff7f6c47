#!/usr/bin/env python3
"""One row of bench/routing/run.sh's routing.jsonl: arbor-loadgen's JSON for
the case, its labels, and what the processes' /metrics say at the case's end:
the coordinator's sub-tree placements (arbor_coordinator_subtree_placements_total)
and each worker's own token counters (arbor_engine_tokens_total by kind,
arbor_engine_preemptions_total). The workers' counts are where the work ran:
loadgen's per-worker figures put all of a job's tokens on the job's worker,
also those of the sub-trees it sent elsewhere.

  case_row.py LOADGEN_JSON MIX POLICY ROUND NUM_WORKERS SPLIT_OUTPUTS \
              COORDINATOR_METRICS [WORKER_ADDRESS=WORKER_METRICS ...]

(metrics as host:port; empty when the process exported none). Prints the row."""
import json
import re
import sys
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def scrape(address):
    """{(name, labels): value} of a Prometheus text page; {} when unreachable."""
    if not address:
        return {}
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(samples, name, label=""):
    return sum(v for (n, labels), v in samples.items() if n == name and label in labels)


def main(argv):
    loadgen, mix, policy, rnd, num_workers, split_outputs, coordinator = argv[1:8]
    row = json.load(open(loadgen))
    row.update(mix=mix, policy=policy, round=int(rnd), num_workers=int(num_workers),
               split_outputs=int(split_outputs))
    c = scrape(coordinator)
    if c:
        row["subtrees"] = int(total(c, "arbor_coordinator_subtree_placements_total"))
    engine = {}
    for arg in argv[8:]:
        address, _, metrics = arg.partition("=")
        w = scrape(metrics)
        if not w:
            continue
        engine[address] = {
            kind: int(total(w, "arbor_engine_tokens_total", f'kind="{kind}"'))
            for kind in ("prefill", "generated", "prefix_hit")
        }
        engine[address]["preemptions"] = int(total(w, "arbor_engine_preemptions_total"))
    if engine:
        row["worker_engine"] = engine
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv)
