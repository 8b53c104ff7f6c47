#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, over a bundle made by
# tools/device_bundle.sh: every test binary in .device/tests (GPU tests run
# for real there), the kernel tests again under compute-sanitizer (memcheck,
# racecheck and synccheck), and every benchmark in .device/bin/*_bench. Logs
# go to $OUT (the device run's output folder) or ./gpu-logs; a table of
# results is printed last. Exit status: non-zero if any test or check failed.
#
# Environment: SANITIZE_REGEX (test names to sanitise, default kernels_(attention_)?gpu),
#              BENCH_ARGS (passed to each benchmark).
set -uo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH="$PWD/.device/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"
LOG=${OUT:-$PWD/gpu-logs}
mkdir -p "$LOG"
SANITIZE_REGEX=${SANITIZE_REGEX:-kernels_(attention_)?gpu}
# At most a few files: the device run returns 8.
TESTS_LOG=$LOG/tests.log SAN_LOG=$LOG/sanitizer.log BENCH_LOG=$LOG/bench.log
: > "$TESTS_LOG"; : > "$SAN_LOG"; : > "$BENCH_LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOG/device.txt" 2>&1
rows=()
failed=0

run_logged() {  # log_file name command...
  local log=$1 name=$2; shift 2
  echo "===== $name: $*" >> "$log"
  local start=$SECONDS
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "===== $name: exit $rc after $((SECONDS - start)) s" >> "$log"
  return $rc
}

gtest_counts() {  # log name -> "passed/skipped/failed"
  awk -v n="===== $2:" 'index($0, n) == 1 {on = !on} on' "$1" |
    awk '/^\[  PASSED  \]/ {p=$4} /^\[  SKIPPED \]/ && /tests?,/ {s=$4} /^\[  FAILED  \]/ && /tests?,/ {f=$4}
         END {printf "%d passed, %d skipped, %d failed", p, s, f}'
}

for t in .device/tests/*; do
  [[ -x "$t" ]] || continue
  name=$(basename "$t")
  start=$SECONDS
  if run_logged "$TESTS_LOG" "$name" "$t"; then status=ok; else status=FAIL; failed=1; fi
  rows+=("| test | $name | $status | $(gtest_counts "$TESTS_LOG" "$name") | $((SECONDS - start)) s |")
  if [[ "$name" =~ $SANITIZE_REGEX ]]; then
    for tool in memcheck racecheck synccheck; do
      extra=()
      # racecheck is slow: the shared-memory kernels are the ones at risk.
      [[ $tool == racecheck ]] && extra=(--gtest_filter='*Cascade*:*Prefill*:*Sampler*')
      start=$SECONDS
      if run_logged "$SAN_LOG" "$name/$tool" compute-sanitizer --tool "$tool" --error-exitcode 99 \
          "$t" "${extra[@]}"; then status=ok; else status=FAIL; failed=1; fi
      summary=$(awk -v n="===== $name/$tool:" 'index($0, n) == 1 {on = !on} on' "$SAN_LOG" |
                grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' | tail -1)
      rows+=("| $tool | $name | $status | ${summary:-no summary} | $((SECONDS - start)) s |")
    done
  fi
done

for b in .device/bin/*_bench; do
  [[ -x "$b" ]] || continue
  name=$(basename "$b")
  start=$SECONDS
  # shellcheck disable=SC2086
  if run_logged "$BENCH_LOG" "$name" "$b" ${BENCH_ARGS:-}; then status=ok; else status=FAIL; failed=1; fi
  rows+=("| bench | $name | $status | see bench.log | $((SECONDS - start)) s |")
done

{
  echo "device: $(cat "$LOG/device.txt")"
  echo
  awk '/^\| kernel \|/ {on=1} on && /^\|/ {print} on && !/^\|/ {on=0}' "$BENCH_LOG"
  grep -E '^limits:|-> cascade' "$BENCH_LOG"
  echo
  echo "| kind | binary | result | details | time |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$LOG/summary.md"
exit $failed
