#!/usr/bin/env bash
# The cluster's greedy output equals the offline engine's, token for token.
#   cluster_greedy_test.sh BIN_DIR UCX_TLS [MODEL_KIND] [WORKER_ARGS]
# Starts `gka local` (router + 2 prefill + 1 decode worker, real processes on 127.0.0.1,
# KV pages and GKA states over UCX with the given transports), sends 16 requests at once
# across two tiers whose decode num_iter differ (so one decode batch mixes them), and compares
# each answer with `gka generate --model` run offline with the same num_iter values.
# MODEL_KIND: tiny (make-tiny-model with the real tokenizer; text prompts) or rank32b
# (one TP=8 rank of the 32B shape: head_dim 128, 8 GKA heads, 1 KV head; token-id prompts).
# WORKER_ARGS: extra flags for every worker, e.g. "--device-transfer staged" (the GPU
# hand-off path — pinned staging, landing, poly61 copy-in check — run over host memory).
set -euo pipefail
BIN=$1
export UCX_TLS=$2
KIND=${3:-tiny}
WORKER_ARGS=${4:-}
GKA=$BIN/gka
. "$(dirname "$0")/lib.sh"
cluster_tmp

if [[ $KIND == tiny ]]; then
  "$GKA" make-tiny-model --out "$TMP/m" 2>/dev/null
else
  # One TP=8 rank of GKA-HQwen3-32B: 8 query/GKA heads, 1 KV head, head_dim 128 (about 1 MiB
  # of GKA state per layer per sequence), hidden kept small so the CPU runs it quickly.
  "$GKA" make-tiny-model --out "$TMP/m" --no-tokenizer --pattern '*-GKA-*-GKA' --heads 8 \
    --kv-heads 1 --head-dim 128 --hidden 256 --intermediate 512 --vocab 4096 2>/dev/null
fi
write_tiers "$TMP/tiers.json"

"$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --prefill-workers 2 --decode-workers 1 \
  --tiers "$TMP/tiers.json" --state-file "$TMP/state" --log-dir "$TMP" \
  --prefill-args "$WORKER_ARGS" --decode-args "$WORKER_ARGS" >"$TMP/local.out" &
LOCAL_PID=$!
wait_cluster 4

prompt_args() {  # i -> PROMPT=(flag value)
  if [[ $KIND == tiny ]]; then
    local texts=("Hello" "The capital of France is" "Write a haiku about GPUs" "1 2 3 4 5 6 7"
                 "你好，世界" $'def f(x):\n    return' "Once upon a time" "Linear attention is")
    PROMPT=(--prompt "${texts[$(( $1 % 8 ))]} #$1")
  else
    local ids=""; for j in $(seq 1 $(( 5 + ($1 * 13) % 40 ))); do ids+="$(( (j * 31 + $1 * 7) % 4000 )),"; done
    PROMPT=(--prompt-ids "${ids%,}")
  fi
}

TIERS=(interactive:30:30 batch:10:1)  # one decode batch mixes num_iter 30 and 1
send_requests 16
compare_offline 16 cluster
echo "cluster_greedy_test ($KIND, UCX_TLS=$UCX_TLS): 16/16 requests equal the offline engine"
