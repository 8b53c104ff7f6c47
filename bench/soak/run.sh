#!/usr/bin/env bash
# A longer soak (docs/RELIABILITY.md, "Soak"): the soak integration test
# (tests/integration/soak_integration_test.cc: real arbor-coordinator,
# arbor-worker and arbor-verifier on loopback, the bundled tiny models on the
# CPU backend) with many more jobs, repeated ROUNDS times so a slow leak shows
# as growth from round to round. Prints each round's figures and writes them
# to $OUT/soak.txt.
#
#   cmake --build build --target soak_integration_test arbor-coordinator arbor-worker arbor-verifier
#   JOBS=20000 ROUNDS=3 bench/soak/run.sh
#
# Env: BUILD (default build), JOBS per round (default 10000), ROUNDS (default 1),
#      OUT (default ./soak-out).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
JOBS=${JOBS:-10000}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-./soak-out}
mkdir -p "$OUT"
test -x "$BUILD/tests/soak_integration_test" || {
  echo "run.sh: build $BUILD/tests/soak_integration_test first (see the header)" >&2
  exit 2
}
: > "$OUT/soak.txt"
status=0
for round in $(seq 1 "$ROUNDS"); do
  echo "run.sh: round $round of $ROUNDS, $JOBS jobs"
  if ! ARBOR_SOAK_JOBS=$JOBS ARBOR_SOURCE_DIR=$PWD ARBOR_BINARY_DIR=$BUILD \
      "$BUILD/tests/soak_integration_test" 2>&1 | tee "$OUT/round-$round.log" |
      grep '^figure: ' | sed "s/^figure: /round $round: /" | tee -a "$OUT/soak.txt"; then
    status=1
  fi
  grep -q '\[  PASSED  \] 1 test' "$OUT/round-$round.log" || status=1
done
[ "$status" -eq 0 ] && echo "run.sh: passed" || echo "run.sh: FAILED (see $OUT/round-*.log)"
exit "$status"
