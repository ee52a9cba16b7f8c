#!/usr/bin/env bash
# The hand-off's transfer tail with and without streaming (issue 11): `gka local` (CPU
# engine, one prefill and one decode worker over UCX) on a random model with a large KV cache;
# REQUESTS prompts of TOKENS tokens one at a time; then the prefill worker's /metrics (a real
# scrape): gka_prefill_transfer_tail_seconds (end of the last prefill step -> the decode
# worker acknowledged the completion), gka_prefill_seconds, gka_prefill_streamed_bytes_total,
# gka_transfer_bytes_total.
#   tests/perf/handoff_tail_bench.sh [build dir] [tokens] [requests] [UCX_TLS]
set -euo pipefail
B=${1:-build}
TOKENS=${2:-2048}
REQUESTS=${3:-4}
export UCX_TLS=${4:-tcp}
GKA=$B/bin/gka
TMP=$(mktemp -d)
LOCAL_PID=
cleanup() {
  [[ -n $LOCAL_PID ]] && kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# Two attention layers with 8 KV heads of 128 (8 KiB of fp32 K+V per token per layer) and two
# GKA layers (8 heads: 1 MiB of state each): TOKENS=2048 moves 32 MiB of KV and 2 MiB of state.
"$GKA" make-tiny-model --out "$TMP/m" --no-tokenizer --pattern '*-GKA-*-GKA' --heads 8 \
  --kv-heads 8 --head-dim 128 --hidden 256 --intermediate 512 --vocab 4096 >/dev/null 2>&1
ids=""
for j in $(seq 1 "$TOKENS"); do ids+="$(( (j * 31) % 4000 )),"; done
ids=${ids%,}

metric() {  # text name -> the value of the first series named exactly `name`
  awk -v n="$2" '$1 ~ "^"n"({|$)" {print $2; exit}' <<<"$1"
}

run() {  # stream: true|false
  local stream=$1 state=$TMP/state.$1
  "$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --prefill-workers 1 \
    --decode-workers 1 --num-slots 2 --state-file "$state" --log-dir "$TMP" \
    --prefill-args "--stream-handoff=$stream --prefill-chunk 256 --max-batch-tokens 256 --num-slots 2" \
    >"$TMP/local.out" &
  LOCAL_PID=$!
  for _ in $(seq 1 600); do
    [[ -s $state ]] && [[ $(wc -l <"$state") -ge 3 ]] && break
    sleep 0.2
  done
  local addr metrics
  addr=$(grep '"router"' "$state" | sed 's/.*"grpc":"\([^"]*\)".*/\1/')
  metrics=$(grep '"prefill"' "$state" | sed 's/.*"metrics":"\([^"]*\)".*/\1/')
  "$GKA" health --addr "$addr" --timeout 60 >/dev/null
  local start end
  start=$(date +%s.%N)
  for _ in $(seq 1 "$REQUESTS"); do
    "$GKA" generate --addr "$addr" --prompt-ids "$ids" --max-tokens 2 --temperature 0 \
      --ignore-eos --json >/dev/null
  done
  end=$(date +%s.%N)
  local text
  text=$(curl -sf "http://$metrics/metrics")
  local tail_sum tail_n pre_sum pre_n streamed kv state
  tail_sum=$(metric "$text" gka_prefill_transfer_tail_seconds_sum)
  tail_n=$(metric "$text" gka_prefill_transfer_tail_seconds_count)
  pre_sum=$(grep '^gka_prefill_seconds_sum' <<<"$text" | awk '{s += $2} END {print s}')
  pre_n=$(grep '^gka_prefill_seconds_count' <<<"$text" | awk '{s += $2} END {print s}')
  streamed=$(metric "$text" gka_prefill_streamed_bytes_total)
  kv=$(grep '^gka_transfer_bytes_total' <<<"$text" | grep 'kind="kv"' | awk '{print $2}')
  state=$(grep '^gka_transfer_bytes_total' <<<"$text" | grep 'kind="state"' | awk '{print $2}')
  awk -v s="$stream" -v ts="$tail_sum" -v tn="$tail_n" -v ps="$pre_sum" -v pn="$pre_n" \
    -v st="$streamed" -v kv="$kv" -v sb="$state" -v wall="$(echo "$end - $start" | bc)" \
    -v n="$REQUESTS" 'BEGIN {
      printf "stream=%-5s requests=%d  prefill %.1f ms  tail %.1f ms (%.1f %% of prefill)  " \
             "moved %.1f MiB (kv %.1f, state %.1f), %.0f %% before the last step ended  " \
             "wall %.2f s/request\n", s, tn, ps / pn * 1e3, ts / tn * 1e3, ts / ps * 100,
             (kv + sb) / tn / 1048576, kv / tn / 1048576, sb / tn / 1048576,
             st / (kv + sb) * 100, wall / n }'
  kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null || true
  LOCAL_PID=
}

echo "machine: $(nproc) cores, $(uname -m); UCX_TLS=$UCX_TLS; prompt $TOKENS tokens, chunk 256"
run false
run true
