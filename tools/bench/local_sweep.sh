#!/usr/bin/env bash
# The issue-9 load benchmark on this machine: a `gka local` cluster (router + 2 prefill + 2
# decode workers, the tiny model, CPU backend) under `gka bench serve`: an open-loop Poisson
# rate sweep (TTFT/ITL percentiles and goodput vs rate) and one closed-loop run over time.
# What it measures is the serving path's overhead on 2 shared CPU cores (router, gRPC, UCX
# hand-off, scheduling, and a tiny model's compute), not model speed.
#
#   tools/bench/local_sweep.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), RATES (0.5,1,2,3,4,5,6,8), DURATION (30 s per rate),
#        SLO (ttft=500ms,itl=50ms), LABEL, EXTRA (more `gka bench serve` flags)
# Writes OUT_DIR/local_sweep.{json,svg} and OUT_DIR/local_closed_c4.{json,svg}.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
RATES=${RATES:-0.5,1,2,3,4,5,6,8}
DURATION=${DURATION:-30}
SLO=${SLO:-ttft=500ms,itl=50ms}
LABEL=${LABEL:-2 prefill + 2 decode}
GKA=$BIN/gka
source tools/bench/local_cluster.sh
bench_workdir "$OUT"

make_tiny_model_and_tiers "$BIN" "$TMP"
start_local_cluster "$BIN" "$TMP/m" "$TMP/tiers.json" 2 2 "$TMP"
echo "cluster up at $ADDR; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

COMMON=(--addr "$ADDR" --input-len 128 --output-len 32 --ignore-eos
        --tier-mix interactive=0.2,standard=0.8 --slo "$SLO" --warmup-requests 4 --seed 1)
# shellcheck disable=SC2086
"$GKA" bench serve "${COMMON[@]}" --sweep "$RATES" --duration "$DURATION" --label "$LABEL" \
  --title "gka local, tiny model, $LABEL: rate sweep - protocol overhead on 2 CPU cores, not model speed" \
  --out "$OUT/local_sweep.json" ${EXTRA:-}
# shellcheck disable=SC2086
"$GKA" bench serve "${COMMON[@]}" --concurrency 4 --duration "$DURATION" --label "$LABEL" \
  --title "gka local, tiny model, $LABEL: closed loop, 4 in flight - 2 CPU cores, not model speed" \
  --out "$OUT/local_closed_c4.json" ${EXTRA:-}
