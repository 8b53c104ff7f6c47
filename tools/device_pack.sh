#!/usr/bin/env bash
# Packs the bundle that tools/device_bundle.sh left in .device/ into one
# xz-compressed tar, .devpack/bundle.tar.xz (ignored by git), because the
# device run carries at most 64 MiB and OpenBLAS alone is 36 MiB unpacked.
# (-9e: its large dictionary finds the CUDA code the binaries share, 26 MiB
# against -6's 42.) Carry [".devpack"] and begin the device command with
#   tools/device_unpack.sh
# which restores .device/ there.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d .device/lib ]] || { echo "device_pack: run tools/device_bundle.sh first" >&2; exit 1; }
if ! git check-ignore -q .devpack 2>/dev/null; then
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")" && echo /.devpack/ >> "$exclude"
fi
mkdir -p .devpack
extra=(); [[ -d .device/e2e ]] && extra+=(e2e)  # bench/e2e/fetch_tokenizer.sh
tar -C .device -cf - bin lib tests "${extra[@]}" | xz -T2 -9e > .devpack/bundle.tar.xz
echo "device_pack: $(du -sh .devpack/bundle.tar.xz | cut -f1) in .devpack/bundle.tar.xz"
