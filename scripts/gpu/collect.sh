#!/bin/bash
# Builds the GPU test and benchmark binaries, the `gka` CLI and the engine's GPU golden test
# (tests/golden/gpu_golden_test) on this (GPU-less) machine and
# packs them, with the shared libraries the GPU machine lacks (Abseil, PCRE2; not
# cuBLAS or the driver, which it has), into .devcarry/gpu/bundle.tar.xz — git-ignored, named
# in the device tool's `carry` (xz keeps the call under its 64 MiB limit with tests/data).
#
#   scripts/gpu/collect.sh                         # configure + build build-cuda, then pack
#   BUILD=/path/to/build scripts/gpu/collect.sh    # pack from an existing build dir
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DGKA_WITH_CUDA=ON -DGKA_WITH_GRPC=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
targets=(cuda_parity_test cuda_kernels_bench)
[[ "${WITH_GKA:-1}" == 1 ]] && targets+=(gka gpu_golden_test)
ninja -C "$BUILD" "${targets[@]}"
bins=("$BUILD/tests/cuda_parity_test" "$BUILD/bin/cuda_kernels_bench")
[[ "${WITH_GKA:-1}" == 1 ]] && bins+=("$BUILD/bin/gka" "$BUILD/tests/gpu_golden_test")
scripts/gpu/pack_bundle.sh .devcarry/gpu/bundle.tar.xz "${bins[@]}"
