#!/usr/bin/env bash
# Bundles what the scaling sweep needs on a machine without gRPC/Abseil (the
# GPU machine, see ../shared/DEVICE.md): arbor-allinone, arbor-scaling-bench
# and arborctl with their non-system shared libraries, into BUILD_DIR/device/
# (ignored by git; name it in the device run's `carry`). Unlike
# tools/device_bundle.sh it leaves .device/ alone (others' bundles live there).
#   bench/scaling/bundle.sh build-aio
# There: bench/scaling/run.sh build-aio/device/bin OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
dest="$BUILD_DIR/device"
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/lib"
for b in arbor-allinone arbor-scaling-bench arborctl; do
  if [[ ! -x "$BUILD_DIR/bin/$b" ]]; then
    [[ $b == arborctl ]] && continue  # handy there, not needed by run.sh
    echo "bundle: $BUILD_DIR/bin/$b not built" >&2; exit 1
  fi
  objcopy --strip-debug "$BUILD_DIR/bin/$b" "$dest/bin/$b"
done
for f in "$dest"/bin/*; do ldd "$f"; done | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*|libpthread|libdl|librt)\.so' |
  while read -r lib; do
    cp -L "$lib" "$dest/lib/" && objcopy --strip-debug "$dest/lib/$(basename "$lib")" || true
  done
echo "bundle: $(ls "$dest/bin" | wc -l) binaries, $(ls "$dest/lib" | wc -l) libraries," \
     "$(du -sh "$dest" | cut -f1) in $dest"
