#!/bin/bash
# The CUDA-backend bundle for scripts/gpu/run_all.sh modes graphs, sanitize-gka and profile
# (and every other mode): builds the parity test, the kernel and engine decode benchmarks, the
# engine's CUDA-graph test and GPU golden test here, packs them with the libraries the GPU
# machine lacks into .devcarry/cuda/bundle.tar.xz (git-ignored; name .devcarry/cuda in carry).
#
#   scripts/gpu/collect_cuda.sh                        # build-cuda-perf, configured if absent
#   device run: BUNDLE=.devcarry/cuda/bundle.tar.xz bash scripts/gpu/run_all.sh "graphs sanitize-gka"
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda-perf}
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DGKA_WITH_CUDA=ON -DGKA_WITH_GRPC=OFF -DGKA_WITH_UCX=OFF \
    -DGKA_BUILD_BENCHMARKS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
ninja -C "$BUILD" cuda_parity_test cuda_kernels_bench engine_decode_bench cuda_graph_test \
  gpu_golden_test
scripts/gpu/pack_bundle.sh .devcarry/cuda/bundle.tar.xz "$BUILD/tests/cuda_parity_test" \
  "$BUILD/bin/cuda_kernels_bench" "$BUILD/bin/engine_decode_bench" \
  "$BUILD/tests/cuda_graph_test" "$BUILD/tests/gpu_golden_test"
