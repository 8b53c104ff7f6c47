#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, -DARBOR_FUZZ=ON: fuzzer + ASan +
# UBSan) into build-fuzz/ and runs each on its seed corpus
# (tests/fuzz/corpus/<target>/; docs/RELIABILITY.md).
#   scripts/fuzz.sh                  # CI: 20 s per target
#   scripts/fuzz.sh 600              # 10 minutes per target
#   scripts/fuzz.sh 60 tokenizer     # one target (or several) for 60 s
# New inputs go to build-fuzz/corpus/<target>/ (the checked-in seeds stay as
# they are); a crash leaves its input in build-fuzz/crashes/<target>/ and
# fails the script. Reproduce one with build-fuzz/fuzz/<target>_fuzz FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}
seconds=${1:-20}
# A fixed seed (ARBOR_FUZZ_SEED=0: random) makes a short run explore the same
# inputs on every machine, so CI repeats what was checked before a push; the
# longer runs that hunt for new bugs should take a random one.
seed=${ARBOR_FUZZ_SEED:-1}
shift || true
start=$(date +%s)

export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}
if [[ ! -f "$FUZZ_DIR/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$FUZZ_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DARBOR_FUZZ=ON >/dev/null
fi
cmake --build "$FUZZ_DIR" -j "$(nproc)" --target arbor_fuzzers
built=$(date +%s)

targets=("$@")
if ((${#targets[@]} == 0)); then
  for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
failed=()
for t in "${targets[@]}"; do
  bin="$FUZZ_DIR/fuzz/${t}_fuzz"
  [[ -x "$bin" ]] || { echo "fuzz.sh: no target $bin" >&2; exit 1; }
  mkdir -p "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/crashes/$t"
  log="$FUZZ_DIR/crashes/$t/log.txt"
  # -rss_limit_mb: an input that makes a parser allocate gigabytes is a bug too.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 ARBOR_SOURCE_DIR=$PWD \
      "$bin" -max_total_time="$seconds" -seed="$seed" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/crashes/$t/" \
      "$FUZZ_DIR/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | grep -o 'cov: [0-9]*' || true)
    echo "fuzz.sh: $t ok: ${runs:-?} inputs, ${cov:-cov: ?}"
  else
    echo "fuzz.sh: $t FAILED (log and input in $FUZZ_DIR/crashes/$t/):" >&2
    grep -E '^==.*ERROR|SUMMARY|runtime error|invariant|Test unit written' "$log" | head -5 >&2 || true
    failed+=("$t")
  fi
done
echo "fuzz.sh: build $((built - start)) s, runs $(( $(date +%s) - built )) s"
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
