#!/usr/bin/env bash
# The Arbor demo: builds (scripts/setup.sh), starts the all-in-one service
# (coordinator + worker + verifier in one process, bundled models), solves a
# few held-out problems with greedy, best-of-N, beam search and particle
# filtering, and prints each answer, whether it is right, and the compute it
# used; then stops the service.
#   scripts/demo.sh                 # build into build/, then run
#   scripts/demo.sh --no-build      # use an existing build
# Env: BUILD_DIR (default build), PROBLEMS (how many, default 4), N (samples,
#      beams, particles; default 8), THREADS (CPU threads per model, default all).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PROBLEMS=${PROBLEMS:-4}
N=${N:-8}
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

if [[ "${1:-}" != "--no-build" ]]; then
  echo "== building (scripts/setup.sh, BUILD_DIR=$BUILD_DIR) =="
  BUILD_DIR="$BUILD_DIR" scripts/setup.sh
fi
BIN="$BUILD_DIR/bin"
for b in arbor-allinone arborctl; do
  [[ -x "$BIN/$b" ]] || { echo "demo: $BIN/$b not built (run scripts/setup.sh)" >&2; exit 1; }
done

log=$(mktemp -t arbor-demo.XXXXXX)
# Step-score cache off: each job's reward tokens are its own, not what an
# earlier strategy on the same problem already scored.
"$BIN/arbor-allinone" --port 0 --metrics_port 0 --threads "${THREADS:-0}" \
  --score_cache_entries 0 >"$log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -f "$log"
}
trap cleanup EXIT

echo "== starting arbor-allinone (models/policy + models/prm) =="
address=""
for _ in $(seq 1 600); do
  address=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$log" | head -1)
  [[ -n "$address" ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "demo: arbor-allinone exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$address" ]] || { cat "$log" >&2; echo "demo: arbor-allinone did not start" >&2; exit 1; }
for _ in $(seq 1 100); do
  "$BIN/arborctl" health --target "$address" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "serving arbor.v1.Reasoning on $address (health: $("$BIN/arborctl" health --target "$address"))"
echo

strategies=(
  "greedy|--strategy=greedy"
  "best-of-$N (PRM)|--strategy=best_of_n --n=$N --selection=reward"
  "beam search $N/4|--strategy=beam_search --n=$N --beam_width=4"
  "particle filter $N|--strategy=particle_filter --n=$N"
)
results=$(mktemp -t arbor-demo-results.XXXXXX)
trap 'cleanup; rm -f "$results"' EXIT
i=0
while IFS= read -r line && ((i < PROBLEMS)); do
  i=$((i + 1))
  question=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["question"])' "$line")
  expected=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["answer"])' "$line")
  echo "problem $i: $question"
  echo "  expected answer: $expected"
  for entry in "${strategies[@]}"; do
    name=${entry%%|*}
    # shellcheck disable=SC2086
    json=$("$BIN/arborctl" solve --target "$address" --json --stream=false --seed "$i" \
             ${entry#*|} "$question")
    $PY - "$name" "$expected" "$json" "$results" <<'PYEOF'
import json, sys
name, expected, r, results = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
u = r.get("usage", {})
answer = r.get("answer", "")
try:
    right = int(answer) == int(expected)
except ValueError:
    right = False
print(f"  {name:<22} answer {answer or '(none)':>8}  {'right' if right else 'WRONG':<5}  "
      f"{int(u.get('generated_tokens', 0)):>5} generated + {int(u.get('reward_tokens', 0)):>5} "
      f"reward tokens, {int(u.get('wall_time_ms', 0)):>5} ms")
with open(results, "a") as f:
    f.write(json.dumps({"strategy": name, "right": right,
                        "generated": int(u.get("generated_tokens", 0)),
                        "reward": int(u.get("reward_tokens", 0)),
                        "ms": int(u.get("wall_time_ms", 0))}) + "\n")
PYEOF
  done
  echo
done < models/data/heldout.jsonl

echo "== summary over $i held-out problems =="
$PY - "$results" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for name in dict.fromkeys(r["strategy"] for r in rows):
    rs = [r for r in rows if r["strategy"] == name]
    print(f"  {name:<22} {sum(r['right'] for r in rs)}/{len(rs)} right, "
          f"{sum(r['generated'] for r in rs) / len(rs):6.0f} generated and "
          f"{sum(r['reward'] for r in rs) / len(rs):6.0f} reward tokens per problem, "
          f"{sum(r['ms'] for r in rs) / len(rs):6.0f} ms per problem")
PYEOF
echo
echo "== stopping arbor-allinone =="
kill -TERM "$pid"
wait "$pid" && echo "stopped cleanly" || { echo "demo: arbor-allinone exited with $?" >&2; exit 1; }
