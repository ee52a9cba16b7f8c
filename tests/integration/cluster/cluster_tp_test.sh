#!/usr/bin/env bash
# A CPU cluster whose prefill and decode workers run different tensor-parallel sizes: greedy
# output equals the offline TP=1 engine's, token for token.
#   cluster_tp_test.sh BIN_DIR UCX_TLS PREFILL_TP DECODE_TP [WORKER_ARGS]
# Starts `gka local --prefill-tp P --decode-tp D` (router + 1 prefill + 1 decode worker, real
# processes on 127.0.0.1; each worker one engine thread per rank over the in-process
# communicator; every decode rank receives its own heads over UCX from the prefill ranks that
# hold them), sends 8 requests at once and compares each answer with `gka generate --model`.
# WORKER_ARGS: extra flags for both workers, e.g. "--device-transfer staged" (the GPU hand-off
# path over host memory: every decode rank's share staged, streamed layer by layer).
set -euo pipefail
BIN=$1
export UCX_TLS=$2
PTP=$3
DTP=$4
WORKER_ARGS=${5:-}
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
  --prefill-args "$WORKER_ARGS" --decode-args "$WORKER_ARGS" >"$TMP/local.out" &
LOCAL_PID=$!
wait_cluster 3
# The workers really run at the requested sizes.
grep -q "at TP=$PTP:" "$TMP"/prefill-0.log || { cat "$TMP"/prefill-0.log >&2; echo "prefill not at TP=$PTP"; exit 1; }
grep -q "at TP=$DTP:" "$TMP"/decode-0.log || { cat "$TMP"/decode-0.log >&2; echo "decode not at TP=$DTP"; exit 1; }

prompt_args() {  # i -> PROMPT: 5..44 token ids (within a page, across pages)
  local ids=""; for j in $(seq 1 $(( 5 + ($1 * 13) % 40 ))); do ids+="$(( (j * 31 + $1 * 7) % 500 )),"; done
  PROMPT=(--prompt-ids "${ids%,}")
}
TIERS=(t:30:30)
send_requests 8
compare_offline 8 "cluster (prefill TP=$PTP, decode TP=$DTP)"
echo "cluster_tp_test (prefill TP=$PTP -> decode TP=$DTP, UCX_TLS=$UCX_TLS${WORKER_ARGS:+, $WORKER_ARGS}): 8/8 requests equal the offline TP=1 engine"
