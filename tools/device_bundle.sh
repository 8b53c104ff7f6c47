#!/usr/bin/env bash
# Bundles a build's binaries for the GPU machine (see ../shared/DEVICE.md):
# copies the test and benchmark executables whose names match a pattern, with
# the non-system shared libraries they need (gRPC, protobuf, Abseil, ...),
# into .device/ (ignored by git; name it in the device run's `carry`).
#
# Usage: tools/device_bundle.sh [BUILD_DIR] [NAME_REGEX]
#   BUILD_DIR   default: build
#   NAME_REGEX  extended regex on file names, default: everything
# Then, on the GPU machine, from the repository root: tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
PATTERN=${2:-.}
[[ -d "$BUILD_DIR" ]] || { echo "device_bundle: no build directory $BUILD_DIR" >&2; exit 1; }
rm -rf .device/bin .device/tests .device/lib
mkdir -p .device/bin .device/tests .device/lib
# .gitignore lists /.device/; keep it excluded in checkouts that lack it.
if ! git check-ignore -q .device 2>/dev/null; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")" && echo /.device/ >> "$exclude"
fi

copied=()
for dir in bin tests; do
  [[ -d "$BUILD_DIR/$dir" ]] || continue
  for f in "$BUILD_DIR/$dir"/*; do
    [[ -f "$f" && -x "$f" ]] || continue
    name=$(basename "$f")
    [[ "$name" =~ $PATTERN ]] || continue
    # Host debug info is not needed there and would swell the transfer;
    # device line info (-lineinfo) stays in the fatbinary.
    objcopy --strip-debug "$f" ".device/$dir/$name" 2>/dev/null || cp "$f" ".device/$dir/$name"
    copied+=(".device/$dir/$name")
  done
done
[[ ${#copied[@]} -gt 0 ]] || { echo "device_bundle: nothing matched '$PATTERN' in $BUILD_DIR" >&2; exit 1; }

# Shared libraries the GPU machine lacks: everything but glibc, libstdc++ and
# the CUDA/NCCL libraries it has.
libs=$(for f in "${copied[@]}"; do ldd "$f" || true; done |
  awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*|libpthread|libdl|librt)\.so' |
  grep -v -E 'libcuda|libcudart|libcublas|libnccl|libnvidia' || true)
for lib in $libs; do
  cp -L "$lib" .device/lib/
  objcopy --strip-debug ".device/lib/$(basename "$lib")" 2>/dev/null || true
done
echo "device_bundle: ${#copied[@]} binaries, $(ls .device/lib | wc -l) libraries," \
     "$(du -sh .device | cut -f1) in .device/"
