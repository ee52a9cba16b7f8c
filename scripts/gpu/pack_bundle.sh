#!/bin/bash
# Packs binaries built here for the GPU machine: each stripped of debug info into bin/, the
# shared libraries it needs that the GPU machine lacks into lib/ (Abseil, PCRE2, GTest),
# libstdc++/libgcc into compat/ (used there only if the machine's are older), as one
# xz-compressed tar (the device tool's carry limit is 64 MiB). Left out: the C runtime, and
# cuBLAS, the CUDA runtime and NCCL, which the machine has (NCCL alone is 218 MB).
#
#   scripts/gpu/pack_bundle.sh .devcarry/gpu/bundle.tar.xz build/bin/a build/tests/b ...
set -euo pipefail
OUT_TAR=$1
shift
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/compat"
for b in "$@"; do
  cp "$b" "$STAGE/bin/"
  strip --strip-debug "$STAGE/bin/$(basename "$b")"
done
for b in "$STAGE"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcublas*|libcudart*) ;;
      libnccl*) ;;
      libstdc++*|libgcc_s*) cp -L "$lib" "$STAGE/compat/" ;;
      *) cp -L "$lib" "$STAGE/lib/" ;;
    esac
  done
done
rm -rf "$(dirname "$OUT_TAR")" && mkdir -p "$(dirname "$OUT_TAR")"
tar -C "$STAGE" -cf - bin lib compat | xz -6 -T2 > "$OUT_TAR"
du -sh "$(dirname "$OUT_TAR")"
