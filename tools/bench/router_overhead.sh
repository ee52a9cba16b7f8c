#!/usr/bin/env bash
# The router's added latency (issue 9): the same closed-loop workload through the router
# (`gka bench serve`) and straight to its one prefill and one decode worker (`gka bench
# direct`, which does the router's Reserve / Prefill / StartDecode itself), alternated
# router, direct, direct, router per concurrency so that the machine's changing load falls on
# both alike. Protocol overhead on 2 CPU cores, not model speed.
#
#   tools/bench/router_overhead.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), MODEL (rank32b | tiny; the vocabulary for direct prompts
#        follows), CONCURRENCY (1,4), REQUESTS (100 per run)
# Writes OUT_DIR/router_overhead_c<N>_{router,direct}_{1,2}.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
MODEL=${MODEL:-rank32b}
CONCURRENCY=${CONCURRENCY:-1,4}
REQUESTS=${REQUESTS:-100}
GKA=$BIN/gka
source tools/bench/local_cluster.sh
bench_workdir "$OUT"

start_worker_pair "$BIN" "$MODEL"
# The tier "standard" (prefill and decode num_iter 10) through the router; the same 10/10
# direct.
IFS=, read -r -a conc <<<"$CONCURRENCY"
for c in "${conc[@]}"; do
  for run in router:1 direct:1 direct:2 router:2; do
    kind=${run%:*}
    n=${run#*:}
    out="$OUT/router_overhead_c${c}_${kind}_${n}.json"
    echo "c=$c $kind #$n: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if [[ $kind == router ]]; then
      "$GKA" bench serve --addr "$ADDR" --concurrency "$c" --num-requests "$REQUESTS" \
        --input-len 128 --output-len 32 --ignore-eos --tier-mix standard=1 --warmup-requests 4 \
        --seed 1 --label "router c=$c" --out "$out" --plot "$TMP/unused.svg"
    else
      "$GKA" bench direct --prefill "$PREFILL" --decode "$DECODE" --concurrency "$c" \
        "${WORKER_TLS[@]}" \
        --num-requests "$REQUESTS" --input-len 128 --output-len 32 --vocab "$VOCAB" \
        --prefill-num-iter 10 --decode-num-iter 10 --warmup-requests 4 --out "$out"
    fi
  done
done
