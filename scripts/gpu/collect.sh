#!/bin/bash
# Builds the GPU test and benchmark binaries on this (GPU-less) machine and collects them, with
# the shared libraries they need that the GPU machine lacks (Abseil; not cuBLAS or the driver,
# which it has), into .devcarry/gpu — git-ignored, named in the device tool's `carry`.
#
#   scripts/gpu/collect.sh                 # configure + build build-cuda, then collect
#   BUILD=/path/to/build scripts/gpu/collect.sh   # collect from an existing build dir
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DGKA_WITH_CUDA=ON -DGKA_WITH_GRPC=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
ninja -C "$BUILD" cuda_parity_test cuda_kernels_bench
OUT=.devcarry/gpu
rm -rf "$OUT" && mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/compat"
for b in "$BUILD/tests/cuda_parity_test" "$BUILD/bin/cuda_kernels_bench"; do
  cp "$b" "$OUT/bin/"
  strip --strip-debug "$OUT/bin/$(basename "$b")"
done
# Abseil (and anything else outside glibc/CUDA) that the binaries link dynamically.
for b in "$OUT"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcublas*|libcudart*) ;;
      libstdc++*|libgcc_s*) cp -L "$lib" "$OUT/compat/" ;;  # used only if the host's are older
      *) cp -L "$lib" "$OUT/lib/" ;;
    esac
  done
done
cp scripts/gpu/run_all.sh "$OUT/"
du -sh "$OUT"
