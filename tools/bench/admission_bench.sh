#!/usr/bin/env bash
# Goodput under overload with and without admission control (issue 9 items 2 and 3): the same
# open-loop Poisson rate sweep through `gka local` (2 prefill + 2 decode workers, CPU backend)
# three times —
#   off:      --admission=false, every request placed at once (the router before issue 9);
#   admit:    admission on, at most MAX_RUNNING requests placed, per-tier queues bounded by
#             queue_limit and max_queue_ms (refusals are RESOURCE_EXHAUSTED + retry-after);
#   ladder:   admission as above plus a degrade ladder on both tiers (prefill and decode
#             num_iter 30/10 -> 10 -> 1 under queue pressure).
# The load generator does not retry, so a refusal counts as a failed request. Protocol overhead
# plus a small model on 2 CPU cores, not model speed.
#
#   tools/bench/admission_bench.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), MODEL (rank32b | tiny), RATES (4,8,12,16), DURATION (20 s per
#        rate), SLO (ttft=500ms,itl=50ms), MAX_RUNNING (12), QUEUE_MS (400), CONFIGS
#        (off admit ladder)
# Writes OUT_DIR/admission_{off,admit,ladder}_sweep.json and the overlay admission_sweep.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
MODEL=${MODEL:-rank32b}
RATES=${RATES:-4,8,12,16}
DURATION=${DURATION:-20}
SLO=${SLO:-ttft=500ms,itl=50ms}
MAX_RUNNING=${MAX_RUNNING:-12}
QUEUE_MS=${QUEUE_MS:-400}
CONFIGS=${CONFIGS:-off admit ladder}
GKA=$BIN/gka
mkdir -p "$OUT"
TMP=$(mktemp -d)
source tools/bench/local_cluster.sh
cleanup() {
  stop_local_cluster
  rm -rf "$TMP"
}
trap cleanup EXIT

make_tiny_model_and_tiers "$BIN" "$TMP" "$MODEL"
# Queues bounded by count and by the TTFT budget: a request that waited QUEUE_MS has lost its
# SLO and is better refused (with a hint) than served late.
cat >"$TMP/admit.json" <<JSON
{"default": "standard",
 "tiers": [{"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10,
            "queue_limit": 32, "max_queue_ms": $QUEUE_MS},
           {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5,
            "queue_limit": 32, "max_queue_ms": $QUEUE_MS}]}
JSON
cat >"$TMP/ladder.json" <<JSON
{"default": "standard",
 "tiers": [{"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10,
            "queue_limit": 32, "max_queue_ms": $QUEUE_MS,
            "degrade_ladder": [{"decode_num_iter": 10, "prefill_num_iter": 10},
                               {"decode_num_iter": 1, "prefill_num_iter": 1}],
            "degrade_queue_ms": 100},
           {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5,
            "queue_limit": 32, "max_queue_ms": $QUEUE_MS,
            "degrade_ladder": [{"decode_num_iter": 1, "prefill_num_iter": 1}],
            "degrade_queue_ms": 100}]}
JSON

inputs=()
for config in $CONFIGS; do
  case $config in
    off) tiers=$TMP/tiers.json; LOCAL_ARGS=(--router-args "--admission=false") ;;
    admit) tiers=$TMP/admit.json; LOCAL_ARGS=(--router-args "--max-running=$MAX_RUNNING") ;;
    ladder) tiers=$TMP/ladder.json; LOCAL_ARGS=(--router-args "--max-running=$MAX_RUNNING") ;;
    *) echo "unknown config $config" >&2; exit 2 ;;
  esac
  start_local_cluster "$BIN" "$TMP/m" "$tiers" 2 2 "$TMP"
  echo "$config: cluster up at $ADDR; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "$GKA" bench serve --addr "$ADDR" --input-len 128 --output-len 32 --ignore-eos \
    --tier-mix interactive=0.2,standard=0.8 --slo "$SLO" --warmup-requests 4 --seed 1 \
    --sweep "$RATES" --duration "$DURATION" --label "$config" \
    --out "$OUT/admission_${config}_sweep.json" --plot "$TMP/unused.svg"
  # The router's own view of the run (admission refusals, ladder moves, overhead histogram).
  curl -s "http://$METRICS/metrics" | grep -E '^gka_(admission|degrade|router_overhead)' \
    >"$OUT/admission_${config}_metrics.txt" || true
  stop_local_cluster
  inputs+=(--in "$OUT/admission_${config}_sweep.json")
done
"$GKA" bench plot "${inputs[@]}" --out "$OUT/admission_sweep.svg" \
  --title "gka local, $MODEL model, 2 prefill + 2 decode: admission off / on / on + degrade ladder - 2 CPU cores, not model speed"
