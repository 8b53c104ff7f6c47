#!/usr/bin/env bash
# Runs sdk_test.cjs: the official OpenAI SDK (npm `openai`, pinned by
# package-lock.json) against arbor-allinone's HTTP API.
#   tests/openai_sdk/run_sdk_test.sh BUILD_DIR
# Installs the SDK with `npm ci` into BUILD_DIR/openai-sdk (ignored by git)
# when it is missing or the lock file changed. Without node >= 18 and npm it
# skips (exit 77, CTest's SKIP_RETURN_CODE) saying so; a failed install fails.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run_sdk_test.sh BUILD_DIR}" && pwd)

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: the OpenAI SDK test needs node >= 18 and npm (apt-get install nodejs npm)"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 18)); then
  echo "SKIP: the OpenAI SDK test needs node >= 18; this is $(node --version)"
  exit 77
fi

sdk="$build/openai-sdk"
if [[ ! -f "$sdk/node_modules/openai/package.json" ]] ||
   ! cmp -s "$src/package-lock.json" "$sdk/package-lock.json"; then
  echo "installing the pinned OpenAI SDK into $sdk"
  mkdir -p "$sdk"
  cp "$src/package.json" "$src/package-lock.json" "$sdk/"
  (cd "$sdk" && timeout 300 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
fi
echo "node $(node --version), openai $(node -p "require('$sdk/node_modules/openai/package.json').version")"
export NODE_PATH="$sdk/node_modules" ARBOR_BINARY_DIR="$build"
exec node --test --test-reporter=spec "$src/sdk_test.cjs"
