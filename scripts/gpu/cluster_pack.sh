#!/usr/bin/env bash
# Packs what scripts/gpu/cluster_bench.sh needs on the GPU machine into .devcarry/workers
# (git-ignored): stripped binaries from a CUDA + UCX build, their Debian libraries except
# glibc/libstdc++/cuBLAS, UCX's cma transport module (loaded at run time, invisible to ldd)
# and ucx_perftest. Keep the result plus the working tree under the 64 MiB a call carries.
#
#   scripts/gpu/cluster_pack.sh build-wgpu
set -euo pipefail
B=${1:-build-wgpu}
D=.devcarry/workers
cmake --build "$B" -j2 --target copy_checksum_test staged_handoff_test staged_transfer_bench
rm -rf $D && mkdir -p $D/bin $D/lib/ucx
for b in "$B/tests/copy_checksum_test" "$B/tests/staged_handoff_test" \
         "$B/bin/staged_transfer_bench"; do
  strip -o "$D/bin/$(basename "$b")" "$b"
done
cp /usr/bin/ucx_perftest $D/bin/
for b in $D/bin/*; do ldd "$b" | awk '{print $3}' | grep '^/' || true; done | sort -u |
  grep -Ev 'libc\.so|libm\.so|ld-linux|libstdc\+\+|libgcc_s|cublas|libdl\.so|libpthread|librt\.so' |
  xargs -I{} cp -L {} $D/lib/
cp -L /usr/lib/x86_64-linux-gnu/ucx/libuct_cma.so.0 $D/lib/ucx/
du -sh $D
