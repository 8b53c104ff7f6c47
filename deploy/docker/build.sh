#!/usr/bin/env bash
# Builds Arbor's container images from the repository root (the build
# context; /.dockerignore keeps build trees and caches out of it):
#   deploy/docker/build.sh cpu          # REGISTRY/arbor:VERSION-cpu and -cpu-demo
#   deploy/docker/build.sh gpu          # REGISTRY/arbor:VERSION-gpu
#   deploy/docker/build.sh all --push
# Environment: REGISTRY (default "arbor", no registry), VERSION (default:
# `git describe`), DOCKER (default docker; podman works), CUDA_VERSION,
# CUDA_ARCHITECTURES (GPU image), PLATFORM (default linux/amd64).
set -euo pipefail
cd "$(dirname "$0")/../.."
usage() { echo "usage: $0 cpu|gpu|all [--push]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
what=$1; shift
push=0
for arg in "$@"; do
  case $arg in --push) push=1 ;; *) usage ;; esac
done
DOCKER=${DOCKER:-docker}
REGISTRY=${REGISTRY:-arbor}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
PLATFORM=${PLATFORM:-linux/amd64}
built=()

build() {  # build DOCKERFILE TARGET TAG [BUILD_ARG...]
  local file=$1 target=$2 tag=$3; shift 3
  local args=(--file "deploy/docker/$file" --target "$target" --platform "$PLATFORM"
              --build-arg "ARBOR_VERSION=$VERSION" --tag "$tag")
  for a in "$@"; do args+=(--build-arg "$a"); done
  echo "build.sh: $tag ($file, target $target)"
  "$DOCKER" build "${args[@]}" .
  built+=("$tag")
}

case $what in
  cpu|gpu|all) ;;
  *) usage ;;
esac
if [[ $what == cpu || $what == all ]]; then
  build cpu.Dockerfile runtime "$REGISTRY:$VERSION-cpu"
  build cpu.Dockerfile demo "$REGISTRY:$VERSION-cpu-demo"
fi
if [[ $what == gpu || $what == all ]]; then
  gpu_args=()
  [[ -n ${CUDA_VERSION:-} ]] && gpu_args+=("CUDA_VERSION=$CUDA_VERSION")
  [[ -n ${CUDA_ARCHITECTURES:-} ]] && gpu_args+=("CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES")
  build gpu.Dockerfile runtime "$REGISTRY:$VERSION-gpu" "${gpu_args[@]}"
fi
if ((push)); then
  for tag in "${built[@]}"; do "$DOCKER" push "$tag"; done
fi
printf 'build.sh: built %s\n' "${built[@]}"
