#!/usr/bin/env bash
# Builds Arbor from nothing (see setup.sh) and runs the whole test suite:
# GoogleTest unit tests, multi-process integration tests on loopback, and the
# Python client tests, then a short run of each fuzz target. GPU tests skip
# where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
start=$(date +%s)
scripts/setup.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
# A short run of every fuzz target (docs/RELIABILITY.md); ARBOR_SKIP_FUZZ=1 skips it.
if [[ ${ARBOR_SKIP_FUZZ:-0} != 1 ]]; then
  scripts/fuzz.sh "${ARBOR_FUZZ_SECONDS:-20}"
fi
echo "test.sh: build + tests took $(( $(date +%s) - start )) s"
