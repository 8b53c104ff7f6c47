#!/usr/bin/env bash
# On the GPU machine: restores .device/ from .devpack/bundle.tar.xz (see
# tools/device_pack.sh). Falls back to Python's lzma where xz is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
if command -v xz >/dev/null; then
  tar -C .device -xJf .devpack/bundle.tar.xz
else
  python3 -c 'import lzma,sys,tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])' \
    .devpack/bundle.tar.xz .device
fi
echo "device_unpack: $(ls .device/bin .device/tests 2>/dev/null | grep -vc ':$') files in .device/"
