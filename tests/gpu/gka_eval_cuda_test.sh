#!/usr/bin/env bash
# GPU golden (label gpu): `gka eval --backend cuda` on the authors' tiny model against their
# strict fp32 golden. fp32 must match as tightly as the CPU engine (relative L2 <= 1e-4);
# bf16 (bf16 weights/GEMMs/residual/KV, fp32 GKA mixer and state) within model-spec §10's
# logits bound (3e-2). Exits 77 (ctest: skipped) when no GPU is visible.
set -euo pipefail
GKA=$1
DATA=tests/data/authors_tiny
G=$DATA/eval_L64_it30.safetensors
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

if ! err=$("$GKA" eval --model $DATA/hybrid_fp32 --inputs $G --backend cuda --dtype fp32 \
           --out "$TMP/fp32.safetensors" 2>&1); then
  if grep -qiE "no CUDA device|no GPU|CUDA backend" <<<"$err"; then
    echo "no CUDA device: skipped"; exit 77
  fi
  echo "$err"; exit 1
fi
"$GKA" compare --expected $G --actual "$TMP/fp32.safetensors" --tol 1e-4
"$GKA" eval --model $DATA/hybrid_fp32 --inputs $G --backend cuda --dtype bf16 \
  --out "$TMP/bf16.safetensors"
"$GKA" compare --expected $G --actual "$TMP/bf16.safetensors" \
  --keys prefill_logits,decode_logits --tol 3e-2
echo "gka_eval_cuda_test: ok"
