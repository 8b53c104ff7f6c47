#!/usr/bin/env bash
# Installs the pinned validator packages (package-lock.json) into
# deploy/k8s/validate/node_modules (git-ignored). scripts/setup.sh runs it;
# a no-op when they are already installed at the locked versions.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
  echo "validate/install.sh: npm is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [[ -f node_modules/.arbor-lock ]] && cmp -s node_modules/.arbor-lock package-lock.json; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.arbor-lock
