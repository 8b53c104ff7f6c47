#!/usr/bin/env bash
# Runs the scaling sweep end to end: starts arbor-allinone on the bundled
# models, sends the held-out problems through its coordinator for every
# strategy and N (arbor-scaling-bench), dumps the candidates of one
# configuration for the PRM AUROC, and stops the service.
#   bench/scaling/run.sh BIN_DIR OUT_DIR [extra arbor-scaling-bench flags]
# Env: THREADS (policy CPU threads, default all), REWARD_THREADS (default THREADS),
#      CONCURRENCY (jobs in flight, default 16), NUM_PROBLEMS (default 300),
#      NS (default 1,2,4,8,16,32), STRATEGIES (default all), BACKEND (default cpu),
#      KV_TOKENS (KV cache per model, default 262144),
#      DUMP (STRATEGY:N whose candidates are dumped, default best_of_n_reward:16),
#      SCORE_CACHE (verifier step-score LRU entries, default 0: off, so that a
#      configuration's reward tokens do not depend on what ran before it),
#      REWARD_MODEL (reward model folder, default the bundled models/prm),
#      REWARD_KIND (e.g. llm_judge: the reward model served as an LLM judge,
#      which best_of_n_tournament needs), REWARD_FLAGS (more arbor-allinone
#      flags, e.g. "--positive_token Y --negative_token N" for models/policy).
# Writes OUT_DIR/scaling.csv, OUT_DIR/candidates.jsonl, OUT_DIR/allinone.log.
# Then: bench/scaling/report.py OUT_DIR (plot, AUROC, docs/SCALING.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:?usage: run.sh BIN_DIR OUT_DIR [bench flags]}
OUT=${2:?usage: run.sh BIN_DIR OUT_DIR [bench flags]}
shift 2
mkdir -p "$OUT"
[[ -d "$BIN/../lib" ]] && export LD_LIBRARY_PATH="$(cd "$BIN/../lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CONCURRENCY=${CONCURRENCY:-16}

"$BIN/arbor-allinone" --port 0 --metrics_port -1 --backend "${BACKEND:-cpu}" \
  --threads "${THREADS:-0}" --reward_threads "${REWARD_THREADS:-${THREADS:-0}}" \
  --kv_cache_tokens "${KV_TOKENS:-262144}" --reward_kv_cache_tokens "${KV_TOKENS:-262144}" \
  --max_running_seqs 1024 --max_batch_tokens 8192 \
  ${REWARD_MODEL:+--reward_model "$REWARD_MODEL"} ${REWARD_KIND:+--reward_kind "$REWARD_KIND"} \
  ${REWARD_FLAGS:-} \
  --score_cache_entries "${SCORE_CACHE:-0}" --max_concurrent_jobs "$CONCURRENCY" --max_queued_jobs $((CONCURRENCY * 4)) \
  >"$OUT/allinone.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
address=""
for _ in $(seq 1 600); do
  address=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$OUT/allinone.log" | head -1)
  [[ -n "$address" ]] && break
  kill -0 $pid 2>/dev/null || { cat "$OUT/allinone.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$address" ]] || { echo "run.sh: arbor-allinone did not start" >&2; exit 1; }
echo "run.sh: arbor-allinone on $address"

rm -f "$OUT/scaling.csv"
"$BIN/arbor-scaling-bench" --target "$address" --problems models/data/heldout.jsonl \
  --num_problems "${NUM_PROBLEMS:-300}" --ns "${NS:-1,2,4,8,16,32}" \
  ${STRATEGIES:+--strategies "$STRATEGIES"} --concurrency "$CONCURRENCY" \
  --dump_candidates "${DUMP:-best_of_n_reward:16}" --candidates_out "$OUT/candidates.jsonl" \
  --out "$OUT/scaling.csv" "$@"
kill -TERM $pid
wait $pid
trap - EXIT
echo "run.sh: done; results in $OUT"
