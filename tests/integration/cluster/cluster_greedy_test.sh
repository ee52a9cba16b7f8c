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
cat >"$TMP/tiers.json" <<'JSON'
{"default": "standard",
 "tiers": [{"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5},
           {"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10},
           {"name": "batch", "prefill_num_iter": 10, "decode_num_iter": 1, "priority": 1}]}
JSON

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

pids=()
for i in $(seq 0 15); do
  tier=$([[ $((i % 2)) -eq 0 ]] && echo interactive || echo batch)
  prompt_args $i
  "$GKA" generate --addr "$ADDR" --tier $tier "${PROMPT[@]}" --max-tokens 12 --temperature 0 --ignore-eos --json \
    >"$TMP/cluster.$i.json" 2>"$TMP/cluster.$i.err" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$TMP"/cluster.*.err >&2; echo "a cluster request failed"; exit 1; }; done

fail=0
for i in $(seq 0 15); do
  if [[ $((i % 2)) -eq 0 ]]; then pn=30; dn=30; else pn=10; dn=1; fi
  prompt_args $i
  "$GKA" generate --model "$TMP/m" "${PROMPT[@]}" --max-tokens 12 --temperature 0 --ignore-eos \
    --prefill-num-iter $pn --decode-num-iter $dn --json >"$TMP/offline.$i.json" 2>/dev/null
  if ! node -e 'const a=require(process.argv[1]),b=require(process.argv[2]);
      if (JSON.stringify(a.token_ids)!==JSON.stringify(b.token_ids)) {console.log("cluster", a.token_ids, "\noffline", b.token_ids); process.exit(1)}' \
      "$TMP/cluster.$i.json" "$TMP/offline.$i.json"; then
    echo "request $i (prefill/decode num_iter $pn/$dn): cluster != offline"; fail=1
  fi
done
[[ $fail -eq 0 ]] || exit 1
echo "cluster_greedy_test ($KIND, UCX_TLS=$UCX_TLS): 16/16 requests equal the offline engine"
