#!/usr/bin/env bash
# Runs on the GPU machine: the whole engine on the CUDA backend against the goldens.
#   1. authors' tiny model, --dtype fp32: every logit/state within relative L2 1e-4;
#   2. authors' tiny model, --dtype bf16 (bf16 weights/GEMMs/residual, fp32 GKA mixer): prefill
#      logits closer to their strict fp32 golden than their own bf16 path (printed side by side);
#   3. make_golden.py sets made here at head_dim 128 (bf16 weights): fp32 ≤ 1e-4; bf16 ≤ 3e-2
#      with argmax agreement printed.
# Usage (device run, carrying the CUDA build and a copy of ../shared/reference):
#   bash tools/golden/gpu_engine_goldens.sh .devcarry/gpu
set -uo pipefail
B=${1:-.devcarry/gpu}
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
GKA=$B/bin/gka
D=tests/data/authors_tiny
T=$(mktemp -d)
rc=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "== authors tiny, cuda fp32 (bar 1e-4)"
$GKA eval --backend cuda --dtype fp32 --model $D/hybrid_fp32 --inputs $D/eval_L64_it30.safetensors --out $T/f32.st 2>/dev/null &&
  $GKA compare --expected $D/eval_L64_it30.safetensors --actual $T/f32.st --tol 1e-4 || rc=1
echo "== authors tiny, cuda bf16 prefill logits vs strict fp32 golden (ours, then the authors' bf16 path)"
$GKA eval --backend cuda --dtype bf16 --model $D/hybrid_fp32 --inputs $D/eval_L64_it30.safetensors --out $T/bf16.st 2>/dev/null &&
  $GKA compare --expected $D/eval_L64_it30.safetensors --actual $T/bf16.st --keys prefill_logits --tol 0.113 || rc=1
$GKA compare --expected $D/eval_L64_it30.safetensors --actual $D/authors_bf16_L64_it30.safetensors --keys prefill_logits --tol 1
if [[ -d .devcarry/reference ]]; then
  for cfg in "hd128 --pattern *-GKA-*-GKA --head-dim 128 --q-heads 8 --kv-heads 1 --hidden 512 --intermediate 1024 --vocab 2048" \
             "hd128_gqa --pattern GKA-* --head-dim 128 --q-heads 16 --kv-heads 2 --hidden 256"; do
    set -- $cfg; name=$1; shift
    python3 .devcarry/reference/make_golden.py --out $T/$name --device cuda "$@" >/dev/null
    echo "== make_golden $name ($*), cuda fp32 (bar 1e-4)"
    $GKA eval --backend cuda --dtype fp32 --model $T/$name --inputs $T/$name/golden.safetensors --out $T/$name.f32 2>/dev/null &&
      $GKA compare --expected $T/$name/golden.safetensors --actual $T/$name.f32 --tol 1e-4 || rc=1
    echo "== make_golden $name, cuda bf16 (bar 3e-2 logits, 1e-2 h_kk/h_kv)"
    $GKA eval --backend cuda --dtype bf16 --model $T/$name --inputs $T/$name/golden.safetensors --out $T/$name.bf16 2>/dev/null &&
      $GKA compare --expected $T/$name/golden.safetensors --actual $T/$name.bf16 --keys prefill_logits,decode_logits --tol 3e-2 || rc=1
  done
fi
rm -rf $T
exit $rc
