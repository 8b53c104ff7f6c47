#!/usr/bin/env bash
# Copies the Arbor binaries and the shared libraries they load into an image
# root, so the final image stage holds only those (docker/README.md).
#   collect_runtime.sh BUILD_DIR OUT_DIR
# Libraries the final stage's base image already has are left out: glibc
# (same distribution release in both stages), the CUDA runtime and cuBLAS
# (the CUDA runtime image), and libcuda (the NVIDIA container toolkit mounts
# the host driver's).
set -euo pipefail
build=$1 out=$2
binaries=(arbor-coordinator arbor-worker arbor-verifier arbor-allinone arborctl)
mkdir -p "$out/usr/local/bin" "$out/usr/local/lib/arbor"
for b in "${binaries[@]}"; do
  if [[ ! -x $build/bin/$b ]]; then
    echo "collect_runtime: $build/bin/$b was not built" >&2
    exit 1
  fi
  install -m 0755 "$build/bin/$b" "$out/usr/local/bin/$b"
done
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libgcc_s|libstdc\+\+|libcuda\.so|libcudart|libcublas|libnvidia)'
for b in "${binaries[@]}"; do
  ldd "$build/bin/$b" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$out/usr/local/lib/arbor/$name"
done
# The final stage runs ldconfig over this folder (/etc/ld.so.conf.d/arbor.conf).
echo /usr/local/lib/arbor > "$out/arbor-ld.so.conf"
