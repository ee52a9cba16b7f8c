#!/bin/bash
# Builds the tensor-parallel GPU binaries (issue 5) on this GPU-less machine — the NCCL
# communicator test, the engine's TP-vs-TP1 GPU test, the throughput benchmark and the decode
# GEMM and all-reduce benchmarks — and packs
# them with the shared libraries the GPU machine lacks (Abseil, GTest; not cuBLAS, NCCL or the
# driver, which it has) into .devcarry/tp/bundle.tar.xz (git-ignored; name .devcarry/tp in the
# device tool's carry). Then, on the GPU machine: scripts/gpu/tp_bench.sh.
#
#   scripts/gpu/tp_collect.sh                       # configure + build build-tp, then pack
#   BUILD=/path/to/build scripts/gpu/tp_collect.sh  # pack from an existing CUDA build dir
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-tp}
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DGKA_WITH_CUDA=ON -DGKA_WITH_GRPC=OFF -DGKA_WITH_UCX=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
ninja -C "$BUILD" -j "${JOBS:-2}" nccl_communicator_test one_shot_all_reduce_test tp_gpu_test \
  tp_throughput_bench cuda_stride_test gpu_golden_test cuda_graph_test cuda_parity_test \
  decode_gemm_bench all_reduce_bench
# BUNDLE_OUT: where the bundle goes (its folder is emptied first); tp_bench.sh reads BUNDLE.
scripts/gpu/pack_bundle.sh "${BUNDLE_OUT:-.devcarry/tp/bundle.tar.xz}" \
  "$BUILD/tests/nccl_communicator_test" "$BUILD/tests/one_shot_all_reduce_test" \
  "$BUILD/tests/tp_gpu_test" "$BUILD/bin/tp_throughput_bench" "$BUILD/tests/cuda_stride_test" \
  "$BUILD/tests/gpu_golden_test" "$BUILD/tests/cuda_graph_test" "$BUILD/tests/cuda_parity_test" \
  "$BUILD/bin/decode_gemm_bench" "$BUILD/bin/all_reduce_bench"
