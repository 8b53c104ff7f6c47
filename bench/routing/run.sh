#!/usr/bin/env bash
# Routing policies across CPU workers on loopback (docs/ROUTING.md): for each
# round, mix and policy, fresh arbor-worker processes on the bundled tiny
# policy model (small KV pools, so that caches evict and placement matters)
# behind one arbor-coordinator --routing=POLICY, driven by arbor-loadgen over
# the public Reasoning API. Policies run interleaved, REPEATS rounds, so that
# noise on a shared machine shows as the spread between rounds. Prints the
# table last and writes it to $OUT/routing.md.
#
#   cmake --build build --target arbor-worker arbor-coordinator arbor-loadgen
#   bench/routing/run.sh
#
# Env: OUT (./routing-out), BIN (build/bin), WORKERS (4), KV_TOKENS (each
#      worker's KV pool, tokens), THREADS (CPU threads per worker), REPEATS (2),
#      JOBS, CONCURRENCY, POLICIES, MIXES (skewed uniform), ROUTING_FLAGS (more
#      arbor-coordinator flags, e.g. --routing_load_weight=0.25).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./routing-out}
BIN=${BIN:-build/bin}
WORKERS=${WORKERS:-4}
KV_TOKENS=${KV_TOKENS:-1280}
THREADS=${THREADS:-1}
REPEATS=${REPEATS:-2}
JOBS=${JOBS:-96}
CONCURRENCY=${CONCURRENCY:-8}
POLICIES=${POLICIES:-"rendezvous round_robin least_loaded prefix_load"}
MIXES=${MIXES:-"skewed uniform"}
mkdir -p "$OUT"
: > "$OUT/routing.jsonl"
start=$SECONDS
log() { echo "run.sh [$((SECONDS - start)) s]: $*" >&2; }

# The two job mixes (arbor-loadgen flags). Both: best-of-4 by majority vote,
# one Extend of 16 tokens per job, so that a job's only prefix hits are other
# jobs' prompts. skewed: 16 shared system prompts (about 260 tokens each),
# Zipf-picked (s = 0.5), and a fifth of the jobs with a long question of their
# own. uniform: no shared prompt, every question of about the same length as a
# skewed job's prompt. The tiny model's context is 512 tokens.
COMMON=(--strategy best_of_n --selection majority_vote --n 4 --iterations 1 --step_tokens 16
        --max_solution_tokens 16
        --mode closed --concurrency "$CONCURRENCY" --jobs "$JOBS" --timeout_s 300)
mix_flags() {
  case $1 in
    skewed) echo --system_prompts 16 --system_skew 0.5 --system_prompt_words 40 \
                 --prompt_words 4 --long_fraction 0.2 --long_words 20 ;;
    uniform) echo --system_prompts 0 --prompt_words 50 ;;
  esac
}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap stop_all EXIT
address_of() {  # log file: the "listening on HOST:PORT" line's address
  for _ in $(seq 1 240); do
    local a
    a=$(sed -n 's/^listening on //p' "$1" 2>/dev/null | head -1)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.25
  done
  log "no 'listening on' in $1"; tail -5 "$1" >&2; return 1
}

run_case() {  # round mix policy
  local round=$1 mix=$2 policy=$3 label="$2-$3-r$1" targets=""
  for w in $(seq 1 "$WORKERS"); do
    "$BIN/arbor-worker" --model models/policy --host 127.0.0.1 --port 0 --metrics_port -1 \
      --threads "$THREADS" --kv_cache_tokens "$KV_TOKENS" > "$OUT/worker$w-$label.log" 2>&1 &
    PIDS+=($!)
  done
  for w in $(seq 1 "$WORKERS"); do
    local a; a=$(address_of "$OUT/worker$w-$label.log") || return 1
    targets="${targets:+$targets,}$a"
  done
  "$BIN/arbor-coordinator" --host 127.0.0.1 --port 0 --metrics_port -1 --workers "$targets" \
    --routing "$policy" --max_concurrent_jobs 64 --max_queued_jobs 1024 \
    --health_interval_ms 500 ${ROUTING_FLAGS:-} > "$OUT/coordinator-$label.log" 2>&1 &
  PIDS+=($!)
  local coordinator; coordinator=$(address_of "$OUT/coordinator-$label.log") || return 1
  sleep 1  # the pools' first health checks
  # shellcheck disable=SC2046
  "$BIN/arbor-loadgen" --target "$coordinator" --label "$label" "${COMMON[@]}" \
    $(mix_flags "$mix") --out "$OUT/cases.jsonl" > "$OUT/loadgen-$label.json" \
    2> "$OUT/loadgen-$label.err" || log "$label: loadgen failed (see $OUT/loadgen-$label.err)"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); r.update(mix=sys.argv[2], policy=sys.argv[3], round=int(sys.argv[4]), num_workers=int(sys.argv[5])); print(json.dumps(r))" \
    "$OUT/loadgen-$label.json" "$mix" "$policy" "$round" "$WORKERS" >> "$OUT/routing.jsonl" \
    2>/dev/null || log "$label: no result"
  stop_all
  log "$label done"
}

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for round in $(seq 1 "$REPEATS"); do
  for mix in $MIXES; do
    for policy in $POLICIES; do run_case "$round" "$mix" "$policy"; done
  done
done
python3 bench/routing/report.py "$OUT/routing.jsonl" | tee "$OUT/routing.md"
