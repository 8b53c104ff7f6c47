#!/usr/bin/env bash
# Builds Arbor from nothing (see setup.sh) and runs the whole test suite:
# GoogleTest unit tests, multi-process integration tests on loopback, and the
# Python client tests. GPU tests skip where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
start=$(date +%s)
scripts/setup.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
echo "test.sh: build + tests took $(( $(date +%s) - start )) s"
