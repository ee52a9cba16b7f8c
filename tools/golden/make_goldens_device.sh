#!/usr/bin/env bash
# Runs on the GPU machine (it has torch): makes golden sets with make_golden.py for several
# shapes and packs them into $OUT/goldens.tar. Carry .devcarry/reference (a copy of
# ../shared/reference) with the call:
#   device run --carry .devcarry/reference -- bash tools/golden/make_goldens_device.sh
set -euo pipefail
REF=${REF:-.devcarry/reference}
DST=${OUT:-/tmp/out}/goldens
mkdir -p "$DST"
run() {  # name, args...
  local name=$1; shift
  echo "== $name: $*"
  python3 "$REF/make_golden.py" --out "$DST/$name" --device cuda "$@" | tail -4
}
run default
run gka_first_legacy_f32 --pattern 'GKA-*-*-GKA' --rope-format legacy --weight-dtype float32 --num-iter 10
run hd128_both --pattern '*-GKA' --head-dim 128 --q-heads 4 --kv-heads 1 --rope-format both
run all_gka --pattern 'GKA-GKA-GKA' --q-heads 8 --kv-heads 8 --head-dim 32 --hidden 128
run tp8_rank_f16 --pattern '*-GKA-*-GKA' --q-heads 8 --kv-heads 1 --head-dim 128 --hidden 512 --intermediate 1024 --vocab 1024 --weight-dtype float16
run long_batch3 --pattern 'GKA-*' --q-heads 16 --kv-heads 2 --head-dim 128 --batch 3 --prompt-len 300 --split 129 --decode-steps 5
# One tar per set (the device returns at most 8 files of 16 MiB each).
for d in "$DST"/*/; do
  n=$(basename "$d"); tar -C "$DST" -cf "${OUT:-/tmp/out}/$n.tar" "$n"
done
rm -rf "$DST"
ls -la "${OUT:-/tmp/out}"
