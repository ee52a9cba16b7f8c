#!/usr/bin/env bash
# The router's added latency at the highest sustainable rate (issue 9): the same open-loop
# Poisson rate sweep through the router (`gka bench serve`) and straight to its one prefill
# and one decode worker (`gka bench direct --request-rate`, which does the router's Reserve /
# Prefill / StartDecode itself), both with the same arrival schedule (--seed) and shapes. At
# each rate the two paths run back to back, the order alternating from rate to rate, so that
# the load other users put on this shared machine falls on both alike. The router's /metrics
# is scraped around each router run: gka_router_overhead_seconds (its own handler time before
# the first token) for that rate alone. Protocol overhead on 2 CPU cores, not model speed.
#
# "Sustainable" (router_vs_direct.py): every request succeeded, achieved throughput >= 95 % of
# the offered rate (requests sent / DURATION), and TTFT p99 did not grow over the run (the last third's <= 1.5 x the first
# third's + 50 ms, from the per-second timeline). The comparison is made at the direct path's
# highest sustainable rate: what one worker pair sustains, and what the router adds there.
#
#   tools/bench/router_vs_direct.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), MODEL (rank32b | tiny), RATES (1,2,3,4,5,6), DURATION (30 s),
#        TAG (a repeat's name: files router_vs_direct_TAG*)
# Writes OUT_DIR/router_vs_direct_{router,direct}_r<R>.json, _router_r<R>_metrics_{0,1}.txt
# (the router's gka_router_overhead_seconds and gka_admission_* series), the sweeps
# router_vs_direct_{router,direct}_sweep.json, router_vs_direct.md (the table) and the overlay
# plot router_vs_direct.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
MODEL=${MODEL:-rank32b}
RATES=${RATES:-1,2,3,4,5,6}
DURATION=${DURATION:-30}
NAME=router_vs_direct${TAG:+_$TAG}
GKA=$BIN/gka
source tools/bench/local_cluster.sh
bench_workdir "$OUT"

start_worker_pair "$BIN" "$MODEL"

router_run() {  # RATE
  local r=$1 base="$OUT/${NAME}_router_r$1"
  scrape >"${base}_metrics_0.txt"
  "$GKA" bench serve --addr "$ADDR" --request-rate "$r" --duration "$DURATION" \
    --input-len 128 --output-len 32 --ignore-eos --tier-mix standard=1 --warmup-requests 2 \
    --seed 1 --label "router" --out "$base.json" --plot "$TMP/unused.svg"
  scrape >"${base}_metrics_1.txt"
}
scrape() { curl -sf "http://$METRICS/metrics" | grep -E '^gka_(router_overhead|admission)_'; }
direct_run() {  # RATE: tier standard's num_iter (10/10), the same shapes and arrivals
  "$GKA" bench direct --prefill "$PREFILL" --decode "$DECODE" --request-rate "$1" "${WORKER_TLS[@]}" \
    --duration "$DURATION" --input-len 128 --output-len 32 --vocab "$VOCAB" \
    --prefill-num-iter 10 --decode-num-iter 10 --warmup-requests 2 --seed 1 \
    --out "$OUT/${NAME}_direct_r$1.json"
}

IFS=, read -r -a rates <<<"$RATES"
i=0
for r in "${rates[@]}"; do
  echo "rate $r: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  if ((i % 2 == 0)); then router_run "$r"; direct_run "$r"; else direct_run "$r"; router_run "$r"; fi
  i=$((i + 1))
done
python3 tools/bench/router_vs_direct.py "$OUT" "$RATES" "$DURATION" "$NAME" | tee "$OUT/$NAME.md"
"$GKA" bench plot --in "$OUT/${NAME}_router_sweep.json" \
  --in "$OUT/${NAME}_direct_sweep.json" --out "$OUT/$NAME.svg" \
  --title "router vs direct worker calls (protocol overhead on 2 CPU cores, not model speed)"
