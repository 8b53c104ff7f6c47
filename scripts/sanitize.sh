#!/usr/bin/env bash
# Builds the suite with sanitizers and runs it (docs/RELIABILITY.md):
#   scripts/sanitize.sh asan [REGEX]   # ASan + UBSan into build-asan/: unit + integration tests
#   scripts/sanitize.sh tsan [REGEX]   # TSan into build-tsan/: the concurrent tests
#   scripts/sanitize.sh                # both
# REGEX narrows the tests (ctest -R). Every report, from a test or from a
# server an integration test started, is written to DIR/sanitizer-logs/
# (the servers' stderr is often a file nobody reads, and a server killed
# at the end of its test exits 0 all the same): the script prints them and
# fails if there is any. A report also fails its test process: UBSan halts
# on the first one, ASan (and LeakSanitizer) always do; TSan goes on and
# exits 66. The suppressions are tests/sanitize/*.supp; Debian's Abseil gets
# annotated by tests/sanitize/absl_tsan_hooks.cc.
set -euo pipefail
cd "$(dirname "$0")/.."
modes=("${1:-all}")
[[ ${modes[0]} == all ]] && modes=(asan tsan)
regex=${2:-}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}
generator=(-G Ninja)  # the target list below asks ninja

# The tests that run threads against each other: the Abseil hooks, the gRPC
# server's drain, the CPU backend's ThreadPool, the engine and its scheduler,
# the KV cache, the job manager, the coordinator, its quotas, routing and HTTP
# API, the services, the multi-process integration tests.
tsan_tests='sanitize_|rpc_server|runtime_cpu_ops|runtime_engine|runtime_radix_kv|coordinator_|worker_generator_service|verifier_service|integration'

status=0
for mode in "${modes[@]}"; do
  case $mode in
    asan) dir=build-asan; flags=address,undefined; tests=${regex:-.} ;;
    # (The soak's 1,000 jobs take longer than its 300 s timeout under TSan.)
    tsan) dir=build-tsan; flags=thread; tests=${regex:-$tsan_tests}
          export ARBOR_SOAK_JOBS=${ARBOR_SOAK_JOBS:-150} ;;
    *) echo "sanitize.sh: unknown mode $mode (asan, tsan or all)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  if [[ ! -f "$dir/CMakeCache.txt" ]]; then
    cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DARBOR_SANITIZE=$flags -DARBOR_CUDA=OFF >/dev/null
  fi
  # Only the chosen tests' binaries
  names=$(ctest --test-dir "$dir" -N -R "$tests" 2>/dev/null | awk '/Test +#/{print $3}' | sort -u)
  targets=$(comm -12 <(echo "$names") <(ninja -C "$dir" -t targets all | sed 's/:.*//' | sort -u))
  # (integration tests depend on the binaries they start)
  cmake --build "$dir" -j "$(nproc)" --target $targets
  built=$(date +%s)
  supp=$PWD/tests/sanitize
  logs=$PWD/$dir/sanitizer-logs
  rm -rf "$logs" && mkdir -p "$logs"
  # log_path: one file per process that reported, named report.BINARY.PID.
  log=log_path=$logs/report:log_exe_name=1
  export ASAN_OPTIONS=$log:detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0:suppressions=$supp/asan.supp
  export LSAN_OPTIONS=suppressions=$supp/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=$log:print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp
  # ignore_noninstrumented_modules: the libc calls (memcpy, free, close...) that
  # Debian's uninstrumented gRPC, protobuf, Abseil and OpenBLAS make are not
  # taken as accesses. TSan sees none of those libraries' own loads, stores
  # and atomics, so it saw their memcpy and free without the ordering around
  # them and reported hundreds of races inside gRPC's arenas and slice
  # buffers and OpenBLAS's threads (docs/RELIABILITY.md, Sanitizers). Every
  # access of our code, the gRPC headers' inline code included, is checked.
  export TSAN_OPTIONS=$log:suppressions=$supp/tsan.supp:halt_on_error=0:second_deadlock_stack=1:report_signal_unsafe=0:ignore_noninstrumented_modules=1:exitcode=66
  # Python tests load the system grpc module, not instrumented binaries.
  if ! ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" -R "$tests" -E '^python_|deploy_'; then
    status=1
  fi
  reports=$(find "$logs" -type f | sort)
  if [[ -n $reports ]]; then
    status=1
    for f in $reports; do echo "=== $f"; cat "$f"; done
  fi
  echo "sanitize.sh: $mode $(echo -n "$reports" | grep -c . || true) sanitizer reports in $logs"
  echo "sanitize.sh: $mode build $((built - start)) s, tests $(( $(date +%s) - built )) s"
done
exit $status
