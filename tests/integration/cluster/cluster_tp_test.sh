#!/usr/bin/env bash
# A CPU cluster whose prefill and decode workers run different tensor-parallel sizes: greedy
# output equals the offline TP=1 engine's, token for token.
#   cluster_tp_test.sh BIN_DIR UCX_TLS PREFILL_TP DECODE_TP
# Starts `gka local --prefill-tp P --decode-tp D` (router + 1 prefill + 1 decode worker, real
# processes on 127.0.0.1; each worker one engine thread per rank over the in-process
# communicator; every decode rank receives its own heads over UCX from the prefill ranks that
# hold them), sends 8 requests at once and compares each answer with `gka generate --model`.
set -euo pipefail
BIN=$1
export UCX_TLS=$2
PTP=$3
DTP=$4
GKA=$BIN/gka
. "$(dirname "$0")/lib.sh"
cluster_tmp

# 8 query heads and 4 KV heads (GKA: 8 q, 4 k/v heads): TP 1, 2 and 4 all split them.
"$GKA" make-tiny-model --out "$TMP/m" --no-tokenizer --pattern '*-GKA-*-GKA' --heads 8 \
  --kv-heads 4 --head-dim 16 --hidden 64 --intermediate 128 --vocab 512 2>/dev/null
# One tier, num_iter 30 both sides (the offline run below uses the same).
cat >"$TMP/tiers.json" <<'JSON'
{"default": "t", "tiers": [{"name": "t", "prefill_num_iter": 30, "decode_num_iter": 30}]}
JSON

"$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --prefill-workers 1 --decode-workers 1 \
  --prefill-tp "$PTP" --decode-tp "$DTP" --tiers "$TMP/tiers.json" --state-file "$TMP/state" --log-dir "$TMP" \
  >"$TMP/local.out" &
LOCAL_PID=$!
wait_cluster 3
# The workers really run at the requested sizes.
grep -q "at TP=$PTP:" "$TMP"/prefill-0.log || { cat "$TMP"/prefill-0.log >&2; echo "prefill not at TP=$PTP"; exit 1; }
grep -q "at TP=$DTP:" "$TMP"/decode-0.log || { cat "$TMP"/decode-0.log >&2; echo "decode not at TP=$DTP"; exit 1; }

prompt_ids() {  # i -> comma-separated ids, 5..44 tokens (within a page, across pages)
  local ids=""; for j in $(seq 1 $(( 5 + ($1 * 13) % 40 ))); do ids+="$(( (j * 31 + $1 * 7) % 500 )),"; done
  echo "${ids%,}"
}

pids=()
for i in $(seq 0 7); do
  "$GKA" generate --addr "$ADDR" --prompt-ids "$(prompt_ids $i)" --max-tokens 12 --temperature 0 \
    --ignore-eos --json >"$TMP/cluster.$i.json" 2>"$TMP/cluster.$i.err" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$TMP"/cluster.*.err "$TMP"/*.log >&2; echo "a cluster request failed"; exit 1; }; done

fail=0
for i in $(seq 0 7); do
  "$GKA" generate --model "$TMP/m" --prompt-ids "$(prompt_ids $i)" --max-tokens 12 --temperature 0 \
    --ignore-eos --prefill-num-iter 30 --decode-num-iter 30 --json >"$TMP/offline.$i.json" 2>/dev/null
  if ! node -e 'const a=require(process.argv[1]),b=require(process.argv[2]);
      if (a.token_ids.length!==12 || JSON.stringify(a.token_ids)!==JSON.stringify(b.token_ids)) {console.log("cluster", a.token_ids, "\noffline", b.token_ids); process.exit(1)}' \
      "$TMP/cluster.$i.json" "$TMP/offline.$i.json"; then
    echo "request $i: cluster (prefill TP=$PTP, decode TP=$DTP) != offline TP=1"; fail=1
  fi
done
[[ $fail -eq 0 ]] || exit 1
echo "cluster_tp_test (prefill TP=$PTP -> decode TP=$DTP, UCX_TLS=$UCX_TLS): 8/8 requests equal the offline TP=1 engine"
