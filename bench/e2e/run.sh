#!/usr/bin/env bash
# End to end on one GPU (docs/E2E.md): search jobs through arbor-coordinator,
# arbor-worker --backend cuda and arbor-verifier --backend cuda as separate
# processes, driven by arbor-loadgen over the public Reasoning API, then the
# same jobs against the same binaries with --prefix_cache=false (the stateless
# baseline). Prints the table last and writes it to $OUT/e2e.md.
#
# Here:   bench/e2e/fetch_tokenizer.sh
#         cmake --build build --target arbor-worker arbor-verifier arbor-coordinator arbor-loadgen
#         tools/device_bundle.sh build '^arbor-(worker|verifier|coordinator|loadgen|allinone)$'
#         tools/device_pack.sh
# There (device run with carry [".devpack"]):
#         tools/device_unpack.sh && OUT=$OUT bench/e2e/run.sh
# Env: OUT (default ./e2e-out), MODELS (/tmp/e2e), CASES (a file of loadgen
#      flag lines, default: the built-in list below), BASELINE (1: run the
#      baselines), BASELINE_CASES (labels that get them; SAL_CASES and
#      NOCACHE_CASES choose per baseline; LEVEL1_CASES run on services
#      restarted with --cascade_levels=1, the prompt-only cascade; FP8_CASES
#      on services restarted with --kv_cache_dtype=fp8_e4m3, rows fp8_*;
#      FP8W_CASES the same with fp8 on the worker only, rows fp8w_*;
#      ALLINONE_CASES on arbor-allinone, the three roles in one process,
#      rows one_*; ALLINONE_PRIO_CASES the same with the policy's CUDA
#      stream at the greatest priority, rows onep_*),
#      CASCADE_LEVELS (1, the product default; 4 adds the levels below the
#      prompt), KV_DTYPE (auto: the main services' KV cache; WORKER_KV_DTYPE
#      and VERIFIER_KV_DTYPE set one service's, baselines included),
#      WORKER_KV_SHARE / VERIFIER_KV_SHARE (0.45 / 0.25: the GPU's total
#      memory each gives its KV pool); BIN (.device/bin), BACKEND (cuda),
#      MAKE_MODELS (1; 0: MODELS already holds policy/ and prm/), PORT_BASE
#      (50051) and METRICS_BASE (9451): bench/e2e/run_test.sh runs it all on
#      the CPU with the bundled models.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./e2e-out}
MODELS=${MODELS:-/tmp/e2e}
BIN=${BIN:-.device/bin}
BACKEND=${BACKEND:-cuda}
# gRPC ports: coordinator PORT_BASE, worker +10, verifier +11; /metrics the
# same from METRICS_BASE.
PORT_BASE=${PORT_BASE:-50051}
METRICS_BASE=${METRICS_BASE:-9451}
COORD=$PORT_BASE WORKER=$((PORT_BASE + 10)) VERIFIER=$((PORT_BASE + 11))
COORD_M=$METRICS_BASE WORKER_M=$((METRICS_BASE + 10)) VERIFIER_M=$((METRICS_BASE + 11))
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="$PWD/.device/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"
start=$SECONDS
log() { echo "run.sh [$((SECONDS - start)) s]: $*"; }

if [[ ${MAKE_MODELS:-1} == 1 ]]; then
  timeout 150 python3 bench/e2e/make_models.py --tokenizer .device/e2e --out "$MODELS" \
    > "$OUT/models.log" 2>&1 || { log "make_models failed"; tail "$OUT/models.log"; exit 1; }
fi
log "models ready"

# One GPU, two engines: each KV pool is a share of the GPU's total memory
# (--kv_memory_share), so the split does not depend on which process starts
# first (docs/E2E.md).
WORKER_KV_SHARE=${WORKER_KV_SHARE:-0.45}
VERIFIER_KV_SHARE=${VERIFIER_KV_SHARE:-0.25}
log "KV pools: worker $WORKER_KV_SHARE, verifier $VERIFIER_KV_SHARE of the GPU's memory"

PIDS=()
WORKER_FLAGS=()
wait_listening() {  # file
  for _ in $(seq 1 240); do grep -q 'listening on' "$1" 2>/dev/null && return 0; sleep 0.5; done
  log "no 'listening on' in $1"; tail -5 "$1"; return 1
}
start_services() {  # extra engine flags...
  # The cascade's levels below the prompt (docs/KERNELS.md) are measured
  # here against LEVEL1_CASES' --cascade_levels=1 (later flags win).
  # WORKER_FLAGS: more flags for the worker alone (later flags win).
  local engine=(--backend "$BACKEND" --max_batch_tokens 8192 --max_running_seqs 1024
                --max_queued_requests 4096 --cascade_levels "${CASCADE_LEVELS:-1}")
  "$BIN/arbor-worker" --model "$MODELS/policy" --port $WORKER --metrics_port $WORKER_M \
    --kv_memory_share "$WORKER_KV_SHARE" "${engine[@]}" \
    --kv_cache_dtype "${WORKER_KV_DTYPE:-${KV_DTYPE:-auto}}" "$@" "${WORKER_FLAGS[@]}" \
    > "$OUT/worker.log" 2>&1 & PIDS+=($!)
  wait_listening "$OUT/worker.log" || return 1
  "$BIN/arbor-verifier" --model "$MODELS/prm" --port $VERIFIER --metrics_port $VERIFIER_M \
    --kv_memory_share "$VERIFIER_KV_SHARE" "${engine[@]}" \
    --kv_cache_dtype "${VERIFIER_KV_DTYPE:-${KV_DTYPE:-auto}}" "$@" \
    > "$OUT/verifier.log" 2>&1 & PIDS+=($!)
  wait_listening "$OUT/verifier.log" || return 1
  "$BIN/arbor-coordinator" --port $COORD --metrics_port $COORD_M --workers 127.0.0.1:$WORKER \
    --verifiers 127.0.0.1:$VERIFIER --max_concurrent_jobs 256 --max_queued_jobs 4096 \
    --call_timeout_ms 300000 > "$OUT/coordinator.log" 2>&1 & PIDS+=($!)
  wait_listening "$OUT/coordinator.log" || return 1
  sleep 2  # the pools' first health checks
}
# The same engines in ONE process (arbor-allinone: coordinator, worker and
# verifier sharing one CUDA context, so their kernels may overlap on the GPU
# where two processes' contexts take turns), rows one_*; extra flags
# (--stream_priority) follow the defaults.
start_allinone() {
  "$BIN/arbor-allinone" --model "$MODELS/policy" --reward_model "$MODELS/prm" --port $COORD \
    --metrics_port $COORD_M --backend "$BACKEND" --max_batch_tokens 8192 --max_running_seqs 1024 \
    --max_queued_requests 4096 --kv_memory_share "$WORKER_KV_SHARE" \
    --reward_kv_memory_share "$VERIFIER_KV_SHARE" \
    --kv_cache_dtype "${WORKER_KV_DTYPE:-${KV_DTYPE:-auto}}" \
    --reward_kv_cache_dtype "${VERIFIER_KV_DTYPE:-${KV_DTYPE:-auto}}" \
    --max_concurrent_jobs 256 --max_queued_jobs 4096 --call_timeout_ms 300000 "$@" \
    > "$OUT/allinone.log" 2>&1 & PIDS+=($!)
  wait_listening "$OUT/allinone.log" || return 1
  sleep 2
}
METRICS_PORTS=worker=$WORKER_M,verifier=$VERIFIER_M
dump_metrics() {  # suffix: each process's /metrics, for the batch and step figures
  for pm in worker:$WORKER_M verifier:$VERIFIER_M coordinator:$COORD_M; do
    python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:${pm#*:}/metrics', timeout=5).read().decode())" \
      > "$OUT/metrics_${pm%%:*}$1.txt" 2>/dev/null
  done
}
stop_services() {
  kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null; PIDS=()
}
trap stop_services EXIT

# One case: loadgen flags; GPU utilisation (nvidia-smi) and the engines'
# batch, step time and KV use (their /metrics) sampled meanwhile.
run_case() {  # label flags...
  local label=$1; shift
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 250 \
    > "$OUT/gpu_$label.txt" 2>/dev/null & local smi=$!
  python3 bench/e2e/sample_metrics.py --ports "$METRICS_PORTS" \
    --out "$OUT/engines_$label.json" & local sampler=$!
  timeout 200 "$BIN/arbor-loadgen" --target 127.0.0.1:$COORD --worker 127.0.0.1:$WORKER \
    --verifier 127.0.0.1:$VERIFIER --label "$label" --question_salt "$label-" "$@" \
    --out "$OUT/e2e.jsonl.part" 2>> "$OUT/loadgen.log" | tail -1 | cut -c1-400
  kill $smi $sampler 2>/dev/null; wait $smi $sampler 2>/dev/null
  python3 - "$OUT" "$label" <<'PY'
import json, sys
out, label = sys.argv[1:]
vals = [float(x) for x in open(f"{out}/gpu_{label}.txt") if x.strip().replace('.', '').isdigit()]
try:
    rows = [json.loads(l) for l in open(f"{out}/e2e.jsonl.part")]
except (FileNotFoundError, json.JSONDecodeError):
    rows = []
try:  # a case shorter than the sampler's start leaves none: the row stays
    engines = json.load(open(f"{out}/engines_{label}.json"))
except (FileNotFoundError, json.JSONDecodeError):
    engines = {}
with open(f"{out}/e2e.jsonl", "a") as f:
    for r in rows:
        r["gpu_busy"] = sum(vals) / len(vals) / 100 if vals else None
        r["engines"] = engines
        f.write(json.dumps(r) + "\n")
open(f"{out}/e2e.jsonl.part", "w").close()
PY
  # The device run returns only a few files, and a run cut by its time limit
  # must still leave its table: the case's samples go into one tar and the
  # report is rewritten after every case.
  tar -C "$OUT" -rf "$OUT/samples.tar" --remove-files "gpu_$label.txt" "engines_$label.json" 2>/dev/null
  write_report
}
write_report() {
  python3 bench/e2e/report.py --rows "$OUT/e2e.jsonl" --device "$DEVICE_NAME" --out "$OUT/e2e.md"
}

# label | loadgen flags (steps of 64 tokens, 8 iterations, beam width 4).
CASES_DEFAULT=$(cat <<'CASES'
beam16_p512_c1    --strategy beam_search --n 16 --prompt_words 512 --concurrency 1 --jobs 3
beam16_p512_c8    --strategy beam_search --n 16 --prompt_words 512 --concurrency 8 --jobs 8
beam16_p512_c32   --strategy beam_search --n 16 --prompt_words 512 --concurrency 32 --jobs 32
dvts16_p512_c32   --strategy dvts --n 16 --prompt_words 512 --concurrency 32 --jobs 32
pf16_p512_c32     --strategy particle_filter --n 16 --prompt_words 512 --concurrency 32 --jobs 32
bon16_p512_c32    --strategy best_of_n --n 16 --prompt_words 512 --concurrency 32 --jobs 32
beam64_p512_c8    --strategy beam_search --n 64 --prompt_words 512 --concurrency 8 --jobs 8
beam16_p2048_c32  --strategy beam_search --n 16 --prompt_words 2048 --concurrency 32 --jobs 32
beam16_p512_open  --strategy beam_search --n 16 --prompt_words 512 --mode open --rate 0.5 --duration_s 30
CASES
)
# The defaults fit the 9-minute device command (about 8.5 min on an H100).
# A baseline list set but empty (SAL_CASES="") runs none of that baseline.
BASELINE_CASES=${BASELINE_CASES:-"beam16_p512_c32 beam16_p2048_c32"}
SAL_CASES=${SAL_CASES-$BASELINE_CASES}          # search-and-learn, prefix cache on
NOCACHE_CASES=${NOCACHE_CASES-$BASELINE_CASES}  # the coordinator, prefix cache off
NOCACHE_SAL_CASES=${NOCACHE_SAL_CASES-"beam16_p512_c32"}  # search-and-learn, prefix cache off
LEVEL1_CASES=${LEVEL1_CASES-""}  # the cascade over shared prompts only (vs CASCADE_LEVELS=4)
FP8_CASES=${FP8_CASES-""}  # an fp8 e4m3 KV cache on worker and verifier
FP8W_CASES=${FP8W_CASES-""}  # an fp8 e4m3 KV cache on the worker, bf16 on the verifier
ALLINONE_CASES=${ALLINONE_CASES-""}  # the three roles in one process (arbor-allinone)
ALLINONE_PRIO_CASES=${ALLINONE_PRIO_CASES-""}  # the same, the policy's stream first
cases() { if [[ -n ${CASES:-} ]]; then cat "$CASES"; else echo "$CASES_DEFAULT"; fi; }
COMMON=(--beam_width 4 --iterations 8 --step_tokens 64 --seed 1)

: > "$OUT/e2e.jsonl"
DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
start_services || exit 1
log "services up"
while read -r label flags; do
  [[ -z $label ]] && continue
  log "case $label"
  # shellcheck disable=SC2086
  run_case "$label" "${COMMON[@]}" $flags
done < <(cases)
# The search-and-learn baseline on the same services (prefix cache on, as
# vLLM with automatic prefix caching): the load generator runs the search.
if [[ ${BASELINE:-1} == 1 ]]; then
  while read -r label flags; do
    [[ " $SAL_CASES " == *" $label "* ]] || continue
    log "baseline case sal_$label (stepwise)"
    # shellcheck disable=SC2086
    run_case "sal_$label" "${COMMON[@]}" $flags --driver stepwise
  done < <(cases)
fi
dump_metrics ""
stop_services

if [[ ${BASELINE:-1} == 1 && -n ${NOCACHE_CASES// /} ]]; then
  start_services --prefix_cache=false || exit 1
  log "baseline services up (--prefix_cache=false)"
  while read -r label flags; do
    [[ " $NOCACHE_CASES " == *" $label "* ]] || continue
    log "baseline case $label"
    # shellcheck disable=SC2086
    run_case "nocache_$label" "${COMMON[@]}" $flags
  done < <(cases)
  while read -r label flags; do
    [[ " $NOCACHE_SAL_CASES " == *" $label "* ]] || continue
    log "baseline case nocache_sal_$label (stepwise, no prefix cache)"
    # shellcheck disable=SC2086
    run_case "nocache_sal_$label" "${COMMON[@]}" $flags --driver stepwise
  done < <(cases)
  dump_metrics _nocache
  stop_services
fi
# The cases of a list again, on services restarted by STARTER (start_services
# with engine flags for both, WORKER_FLAGS set by the caller for the worker
# alone; or start_allinone), rows PREFIX + label.
run_restarted() {  # prefix "case labels" starter [flags...]
  local prefix=$1 list=$2; shift 2
  [[ ${BASELINE:-1} == 1 && -n ${list// /} ]] || return 0
  "$@" || exit 1
  log "services up for ${prefix}rows (${*:2} ${WORKER_FLAGS[*]})"
  while read -r label flags; do
    [[ " $list " == *" $label "* ]] || continue
    log "case $prefix$label"
    # shellcheck disable=SC2086
    run_case "$prefix$label" "${COMMON[@]}" $flags
  done < <(cases)
  dump_metrics "_${prefix%_}"
  stop_services
}
run_restarted lvl1_ "$LEVEL1_CASES" start_services --cascade_levels=1
run_restarted fp8_ "$FP8_CASES" start_services --kv_cache_dtype=fp8_e4m3
WORKER_FLAGS=(--kv_cache_dtype=fp8_e4m3)
run_restarted fp8w_ "$FP8W_CASES" start_services
WORKER_FLAGS=()
METRICS_PORTS=worker=$COORD_M,verifier=$COORD_M  # one registry, role labels apart
run_restarted one_ "$ALLINONE_CASES" start_allinone
run_restarted onep_ "$ALLINONE_PRIO_CASES" start_allinone --stream_priority=-5
METRICS_PORTS=worker=$WORKER_M,verifier=$VERIFIER_M
tar -C "$OUT" -rf "$OUT/samples.tar" --remove-files $(cd "$OUT" && ls metrics_*.txt 2>/dev/null) 2>/dev/null
write_report
log "done"
