#!/usr/bin/env bash
# Installs what Arbor needs (Debian packages, when run as root), then configures
# and builds it into build/. Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh            # configure + build everything
#   BUILD_DIR=out scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}

packages=(
  cmake ninja-build g++ pkg-config ccache git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libre2-dev nlohmann-json3-dev libopenblas-dev libssl-dev libcpp-httplib-dev
  python3 python3-grpcio python3-grpc-tools python3-numpy python3-venv python3-yaml
  prometheus
  # libFuzzer and the sanitizer runtimes (scripts/fuzz.sh, scripts/sanitize.sh)
  clang-14 libclang-rt-14-dev llvm-14
)
# The deploy tests' tools (docs/DEPLOY.md), by command: another package may
# already provide it (a kubectl from the Cloud SDK, Node.js from NodeSource),
# and installing Debian's over it would conflict.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root or install them): ${missing[*]}" >&2
    exit 1
  fi
fi

# The pinned Kubernetes schema validator (deploy/k8s/validate, git-ignored
# node_modules); without it deploy_k8s_test skips and says why.
if command -v npm >/dev/null; then
  deploy/k8s/validate/install.sh || echo "setup: deploy/k8s/validate/install.sh failed (npm registry unreachable?)" >&2
fi

# Cache hits across clones (CI builds a fresh clone in another folder):
# hash paths relative to the source tree, not the working directory.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${ARBOR_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
