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
#   MIXES="uniform wide" POLICIES="rendezvous prefix_load" THREADS=3 REPEATS=3 KV_TOKENS=1664 \
#     bench/routing/run.sh   # 16 cores: 4 workers x 3 threads, pinned
#
# Env: OUT (./routing-out), BIN (build/bin), WORKERS (4), KV_TOKENS (each
#      worker's KV pool, tokens), THREADS (CPU threads per worker), REPEATS (2),
#      MIXES (skewed uniform; also: wide), ROUTING_FLAGS (more arbor-coordinator
#      flags, e.g. --routing_load_weight=0.25), PIN (auto: pin each worker to
#      THREADS cores of its own, the coordinator and loadgen to the rest, when
#      there are WORKERS x THREADS + 2 cores; 1 or 0 to force).
#   skewed, uniform: JOBS (96), CONCURRENCY (8), POLICIES (the four).
#   wide: WIDE_JOBS (8), WIDE_CONCURRENCY (1), WIDE_N (32 samples), WIDE_STEPS
#      (4 steps of 16 tokens), WIDE_POLICIES (prefix_load prefix_load+split).
#   A policy "P+split" is --routing=P --routing_split_outputs=$SPLIT_OUTPUTS (8).
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
WIDE_JOBS=${WIDE_JOBS:-8}
WIDE_CONCURRENCY=${WIDE_CONCURRENCY:-1}
WIDE_N=${WIDE_N:-32}
WIDE_STEPS=${WIDE_STEPS:-4}
WIDE_POLICIES=${WIDE_POLICIES:-"prefix_load prefix_load+split"}
SPLIT_OUTPUTS=${SPLIT_OUTPUTS:-8}
PIN=${PIN:-auto}
mkdir -p "$OUT"
: > "$OUT/routing.jsonl"
start=$SECONDS
log() { echo "run.sh [$((SECONDS - start)) s]: $*" >&2; }

# The job mixes (arbor-loadgen flags). skewed and uniform: best-of-4 by
# majority vote, one Extend of 16 tokens per job, so that a job's only prefix
# hits are other jobs' prompts. skewed: 16 shared system prompts (about 260
# tokens each), Zipf-picked (s = 0.5), and a fifth of the jobs with a long
# question of their own. uniform: no shared prompt, every question of about the
# same length as a skewed job's prompt. The tiny model's context is 512 tokens.
# wide: few jobs, each larger than one worker: best-of-WIDE_N by majority vote
# in WIDE_STEPS steps of 16 tokens (loadgen's best-of-N step is iterations x
# step_tokens = 16 tokens, the solution cap ends each sample after WIDE_STEPS;
# one Extend per step for all live samples; EOS ignored, so every job does the
# same work), WIDE_CONCURRENCY jobs in
# flight: from its second step a job's call has WIDE_N branches, which
# --routing_split_outputs may cut into sub-trees on idle workers. Its KV
# (about 250 prompt tokens + WIDE_N x 64) is more than the default pools hold.
mix_flags() {
  case $1 in
    skewed|uniform)
      echo --strategy best_of_n --selection majority_vote --n 4 --iterations 1 --step_tokens 16 \
           --max_solution_tokens 16 --concurrency "$CONCURRENCY" --jobs "$JOBS" ;;&
    skewed) echo --system_prompts 16 --system_skew 0.5 --system_prompt_words 40 \
                 --prompt_words 4 --long_fraction 0.2 --long_words 20 ;;
    uniform) echo --system_prompts 0 --prompt_words 50 ;;
    wide) echo --strategy best_of_n --selection majority_vote --n "$WIDE_N" --iterations 1 \
               --step_tokens 16 --max_solution_tokens $((WIDE_STEPS * 16)) --ignore_eos \
               --system_prompts 0 --prompt_words 50 \
               --concurrency "$WIDE_CONCURRENCY" --jobs "$WIDE_JOBS" ;;
    *) log "unknown mix $1"; return 1 ;;
  esac
}
policies_of() {
  case $1 in wide) echo "$WIDE_POLICIES" ;; *) echo "$POLICIES" ;; esac
}

# Cores: on a machine with room for them, each worker gets THREADS cores of
# its own and the coordinator and loadgen share the rest, so that the
# workers' compute does not queue behind each other or the RPC threads.
CPUS=($(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))'))
NEED=$((WORKERS * THREADS + 2))
if [ "$PIN" = auto ]; then
  PIN=0
  [ "${#CPUS[@]}" -ge "$NEED" ] && command -v taskset > /dev/null && PIN=1
fi
pin() {  # pin SLOT: the command prefix; SLOT 1..WORKERS a worker's cores, 0 the rest
  [ "$PIN" = 1 ] || return 0
  local cores
  if [ "$1" -gt 0 ]; then
    cores=$(IFS=,; echo "${CPUS[*]:$((($1 - 1) * THREADS)):$THREADS}")
  else
    cores=$(IFS=,; echo "${CPUS[*]:$((WORKERS * THREADS))}")
  fi
  echo taskset -c "$cores"  # taskset execs the command: $! stays its pid
}

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap stop_all EXIT
address_of() {  # log file [what]: the "listening on HOST:PORT" (or "WHAT on") line's address
  for _ in $(seq 1 240); do
    local a
    a=$(sed -n "s/^${2:-listening} on //p" "$1" 2>/dev/null | head -1)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.25
  done
  log "no 'listening on' in $1"; tail -5 "$1" >&2; return 1
}

run_case() {  # round mix policy
  local round=$1 mix=$2 policy=$3 label="$2-${3//+/_}-r$1"  # job ids take no "+"
  local targets="" split=0 worker_metrics=()
  local routing=${policy%+split}
  [ "$routing" != "$policy" ] && split=$SPLIT_OUTPUTS
  for w in $(seq 1 "$WORKERS"); do
    $(pin "$w") "$BIN/arbor-worker" --model models/policy --host 127.0.0.1 --port 0 --metrics_port 0 \
      --threads "$THREADS" --kv_cache_tokens "$KV_TOKENS" > "$OUT/worker$w-$label.log" 2>&1 &
    PIDS+=($!)
  done
  for w in $(seq 1 "$WORKERS"); do
    local a m
    a=$(address_of "$OUT/worker$w-$label.log") || return 1
    m=$(address_of "$OUT/worker$w-$label.log" metrics) || return 1
    targets="${targets:+$targets,}$a"
    worker_metrics+=("$a=$m")
  done
  $(pin 0) "$BIN/arbor-coordinator" --host 127.0.0.1 --port 0 --metrics_port 0 --workers "$targets" \
    --routing "$routing" --routing_split_outputs "$split" \
    --max_concurrent_jobs 64 --max_queued_jobs 1024 \
    --health_interval_ms 500 ${ROUTING_FLAGS:-} > "$OUT/coordinator-$label.log" 2>&1 &
  PIDS+=($!)
  local coordinator coordinator_metrics
  coordinator=$(address_of "$OUT/coordinator-$label.log") || return 1
  coordinator_metrics=$(address_of "$OUT/coordinator-$label.log" metrics) || return 1
  sleep 1  # the pools' first health checks
  local flags; flags=$(mix_flags "$mix") || return 1
  # shellcheck disable=SC2086
  $(pin 0) "$BIN/arbor-loadgen" --target "$coordinator" --label "$label" --mode closed --timeout_s 300 \
    $flags --out "$OUT/cases.jsonl" > "$OUT/loadgen-$label.json" \
    2> "$OUT/loadgen-$label.err" || log "$label: loadgen failed (see $OUT/loadgen-$label.err)"
  sleep 0.5  # the workers' token counters refresh every 250 ms
  python3 bench/routing/case_row.py "$OUT/loadgen-$label.json" "$mix" "$policy" "$round" \
    "$WORKERS" "$split" "$coordinator_metrics" "${worker_metrics[@]}" >> "$OUT/routing.jsonl" \
    2>/dev/null || log "$label: no result"
  stop_all
  log "$label done"
}

log "machine: ${#CPUS[@]} cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
log "$WORKERS workers x $THREADS threads + coordinator + loadgen ($NEED cores);" \
    "$([ "$PIN" = 1 ] && echo pinned || echo not pinned)"
[ "${#CPUS[@]}" -lt "$NEED" ] && log "warning: more threads than cores: the workers contend"
for round in $(seq 1 "$REPEATS"); do
  for mix in $MIXES; do
    for policy in $(policies_of "$mix"); do run_case "$round" "$mix" "$policy"; done
  done
done
log "all cases done"
python3 bench/routing/report.py "$OUT/routing.jsonl" | tee "$OUT/routing.md"
