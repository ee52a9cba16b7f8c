#!/usr/bin/env bash
# Goodput under overload with and without admission control (issue 9 items 2 and 3): the same
# open-loop Poisson rate sweep through `gka local` (2 prefill + 2 decode workers, CPU backend)
# in several configurations —
#   off:      --admission=false, every request placed at once (the router before issue 9);
#   slots:    admission on with its default bound (the decode workers' 2 x 16 state slots),
#             per-tier queues bounded by queue_limit and max_queue_ms (refusals are
#             RESOURCE_EXHAUSTED + retry-after);
#   admit:    the same with at most MAX_RUNNING requests placed (--max-running);
#   ladder:   admit plus a degrade ladder on both tiers (prefill and decode num_iter
#             30/10 -> 10 -> 1 under queue pressure).
# The load generator does not retry, so a refusal counts as a failed request. Protocol overhead
# plus a small model on 2 CPU cores, not model speed.
#
#   tools/bench/admission_bench.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), MODEL (rank32b | tiny), RATES (6,10,14), DURATION (15 s per
#        rate), SLO (ttft=500ms,itl=50ms), MAX_RUNNING (8), QUEUE_MS (400), CONFIGS
#        (off slots admit ladder)
# Writes OUT_DIR/admission_<config>_sweep.json and _metrics.txt (the router's admission,
# ladder and overhead series after each point) and the overlay admission_sweep.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
MODEL=${MODEL:-rank32b}
RATES=${RATES:-6,10,14}
DURATION=${DURATION:-15}
SLO=${SLO:-ttft=500ms,itl=50ms}
MAX_RUNNING=${MAX_RUNNING:-8}
QUEUE_MS=${QUEUE_MS:-400}
CONFIGS=${CONFIGS:-off slots admit ladder}
GKA=$BIN/gka
source tools/bench/local_cluster.sh
bench_workdir "$OUT"

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

# Configs alternate within each rate (the order rotating from rate to rate), so that the load
# other users put on this shared machine falls on all of them alike; each point is its own
# cluster and `--sweep RATE` run, merged per config afterwards.
cluster_for() {  # config
  case $1 in
    off) tiers=$TMP/tiers.json; LOCAL_ARGS=(--router-args "--admission=false") ;;
    slots) tiers=$TMP/admit.json; LOCAL_ARGS=() ;;
    admit) tiers=$TMP/admit.json; LOCAL_ARGS=(--router-args "--max-running=$MAX_RUNNING") ;;
    ladder) tiers=$TMP/ladder.json; LOCAL_ARGS=(--router-args "--max-running=$MAX_RUNNING") ;;
    *) echo "unknown config $1" >&2; exit 2 ;;
  esac
  start_local_cluster "$BIN" "$TMP/m" "$tiers" 2 2 "$TMP"
}
read -r -a configs <<<"$CONFIGS"
IFS=, read -r -a rates <<<"$RATES"
turn=0
for rate in "${rates[@]}"; do
  for i in "${!configs[@]}"; do
    config=${configs[$(((i + turn) % ${#configs[@]}))]}
    cluster_for "$config"
    echo "$config @ $rate req/s: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    "$GKA" bench serve --addr "$ADDR" --input-len 128 --output-len 32 --ignore-eos \
      --tier-mix interactive=0.2,standard=0.8 --slo "$SLO" --warmup-requests 4 --seed 1 \
      --sweep "$rate" --duration "$DURATION" --label "$config" \
      --out "$TMP/point_${config}_${rate}.json" --plot "$TMP/unused.svg"
    # The router's own view (admission refusals, ladder moves, overhead histogram).
    curl -s "http://$METRICS/metrics" | grep -E '^gka_(admission|degrade|router_overhead)' \
      >"$TMP/metrics_${config}_${rate}.txt" || true
    stop_local_cluster
  done
  turn=$((turn + 1))
done
inputs=()
for config in "${configs[@]}"; do
  # One sweep JSON per config: the first point's file with every point appended.
  node -e '
    const [out, ...files] = process.argv.slice(1);
    const runs = files.map(f => require(f));
    runs[0].points = runs.flatMap(r => r.points);
    require("fs").writeFileSync(out, JSON.stringify(runs[0], null, 1));
  ' "$OUT/admission_${config}_sweep.json" $(for r in "${rates[@]}"; do echo "$TMP/point_${config}_${r}.json"; done)
  cat $(for r in "${rates[@]}"; do echo "$TMP/metrics_${config}_${r}.txt"; done) \
    >"$OUT/admission_${config}_metrics.txt"
  inputs+=(--in "$OUT/admission_${config}_sweep.json")
done
"$GKA" bench plot "${inputs[@]}" --out "$OUT/admission_sweep.svg" \
  --title "gka local, $MODEL model, 2 prefill + 2 decode: admission off / bounded by slots / --max-running $MAX_RUNNING / + degrade ladder - 2 CPU cores, not model speed"
