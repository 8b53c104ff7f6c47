#!/usr/bin/env bash
# bench/e2e/run.sh end to end on the CPU, as a test of the suite: the bundled
# models, one tiny beam-search case, and every row that runs without a GPU
# (the main row, the search-and-learn loop with and without the prefix
# cache, the coordinator without it, services restarted with engine flags,
# arbor-allinone with and without the stream priority). Checks that each row ran every job, that the cache-off
# rows hit no prefix, and that the table has a line for each. A GPU run costs
# scarce device minutes; this catches the script's own mistakes first.
#   bench/e2e/run_test.sh BIN_DIR
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: run_test.sh BIN_DIR}" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap '[[ -n ${KEEP:-} ]] || rm -rf "$out"' EXIT

cat > "$out/cases.txt" <<'CASES'
tiny_beam --strategy beam_search --n 4 --prompt_words 8 --concurrency 2 --jobs 2 --iterations 2 --step_tokens 16
CASES
# Below the ephemeral range (32768+) that other tests' port-0 servers draw from.
base=$((20000 + ($$ % 700) * 16))
status=0
BIN="$BIN_DIR" BACKEND=cpu MAKE_MODELS=0 MODELS="$SRC/models" PORT_BASE=$base \
  METRICS_BASE=$((base + 2)) CASES="$out/cases.txt" BASELINE_CASES=tiny_beam \
  NOCACHE_SAL_CASES=tiny_beam LEVEL1_CASES=tiny_beam ALLINONE_CASES=tiny_beam ALLINONE_PRIO_CASES=tiny_beam \
  OUT="$out/e2e" bash "$SRC/bench/e2e/run.sh" > "$out/run.log" 2>&1 || status=$?
if [[ $status != 0 ]]; then
  echo "run.sh exited with $status:"; tail -30 "$out/run.log"
  for f in "$out"/e2e/*.log; do echo "== $f"; tail -5 "$f"; done
  exit 1
fi

python3 - "$out/e2e" <<'PY'
import json, sys
out = sys.argv[1]
rows = {r["label"]: r for r in map(json.loads, open(f"{out}/e2e.jsonl")) if r}
want = ["tiny_beam", "sal_tiny_beam", "nocache_tiny_beam", "nocache_sal_tiny_beam",
        "lvl1_tiny_beam", "one_tiny_beam", "onep_tiny_beam"]
problems = [f"no row {label}" for label in want if label not in rows]
for label, r in rows.items():
    if r["jobs"] != 2 or r["failed"]:
        problems.append(f"{label}: {r['jobs']} jobs done, {r['failed']} failed (want 2, 0)")
    if r["generated_tokens"] <= 0:
        problems.append(f"{label}: no tokens generated")
    if label.startswith("nocache_") and r["prefix_hit_ratio"] != 0:
        problems.append(f"{label}: prefix hit ratio {r['prefix_hit_ratio']} with the cache off")
if rows.get("tiny_beam", {}).get("prefix_hit_ratio", 0) <= 0:
    problems.append("tiny_beam: no prefix hits with the cache on")
table = open(f"{out}/e2e.md").read()
problems += [f"e2e.md: no line for {label}" for label in want if f"| {label} |" not in table]
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"bench/e2e/run.sh on the CPU: {len(rows)} rows, table {len(table.splitlines())} lines")
PY
