#!/usr/bin/env bash
# `gka eval` + `gka compare` end to end on the authors' tiny model (their strict fp32 golden,
# mapped to make_golden.py's keys by tools/golden/trim_authors_golden.py), and the CLI's
# clear error for a combination the CPU backend cannot run.
set -euo pipefail
GKA=$1
DATA=tests/data/authors_tiny
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

"$GKA" eval --model $DATA/hybrid_fp32 --inputs $DATA/eval_L64_it30.safetensors --out "$TMP/out.safetensors"
"$GKA" compare --expected $DATA/eval_L64_it30.safetensors --actual "$TMP/out.safetensors" --tol 1e-4

# A wrong golden must fail the comparison (the check can fail).
"$GKA" eval --model $DATA/hybrid_fp32 --inputs $DATA/eval_L64_it30.safetensors --num-iter 1 --out "$TMP/n1.safetensors"
if "$GKA" compare --expected $DATA/eval_L64_it30.safetensors --actual "$TMP/n1.safetensors" --keys prefill_logits --tol 1e-4; then
  echo "num_iter 1 output matched the num_iter 30 golden: the comparison cannot fail"; exit 1
fi

# --backend cpu --dtype bf16 is a clear error, not a silent fallback.
if err=$("$GKA" eval --model $DATA/hybrid_fp32 --inputs $DATA/eval_L64_it30.safetensors --dtype bf16 --out "$TMP/x" 2>&1); then
  echo "bf16 on the CPU backend should fail"; exit 1
fi
grep -q "CPU backend computes in fp32" <<<"$err" || { echo "unexpected error: $err"; exit 1; }
echo "gka_eval_test: ok"
