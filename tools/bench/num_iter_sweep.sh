#!/usr/bin/env bash
# What fewer decode solver iterations buy under load: the same open-loop Poisson rate sweep
# through `gka local` (2 prefill + 2 decode workers, CPU backend) with every request's decode
# num_iter pinned high and then low (the per-request override). This is the static bound of
# what a degrade ladder (issue 9 item 3: lower num_iter under pressure) can buy; the ladder
# itself would move between these curves. Protocol overhead plus a small model on 2 CPU cores,
# not model speed.
#
#   tools/bench/num_iter_sweep.sh [OUT_DIR]        (default docs/bench)
#   env: BIN (build-bench/bin), MODEL (rank32b | tiny), RATES (2,4,6,8,10,12,14,16),
#        DURATION (20 s per rate), HIGH (30), LOW (1), SLO (ttft=500ms,itl=20ms)
# Writes OUT_DIR/num_iter_{HIGH,LOW}_sweep.json and the overlay OUT_DIR/num_iter_sweep.svg.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/bench}
BIN=${BIN:-build-bench/bin}
MODEL=${MODEL:-rank32b}
RATES=${RATES:-2,4,6,8,10,12,14,16}
DURATION=${DURATION:-20}
HIGH=${HIGH:-30}
LOW=${LOW:-1}
SLO=${SLO:-ttft=500ms,itl=20ms}
GKA=$BIN/gka
source tools/bench/local_cluster.sh
bench_workdir "$OUT"

make_tiny_model_and_tiers "$BIN" "$TMP" "$MODEL"
start_local_cluster "$BIN" "$TMP/m" "$TMP/tiers.json" 2 2 "$TMP"
echo "cluster up at $ADDR; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# The interactive tier (prefill num_iter 30) for every request; only decode num_iter differs.
for n in "$HIGH" "$LOW"; do
  "$GKA" bench serve --addr "$ADDR" --input-len 128 --output-len 32 --ignore-eos \
    --tier-mix interactive=1 --decode-num-iter "$n" --slo "$SLO" --warmup-requests 4 --seed 1 \
    --sweep "$RATES" --duration "$DURATION" --label "decode num_iter $n" \
    --out "$OUT/num_iter_${n}_sweep.json" --plot "$TMP/unused.svg"
done
"$GKA" bench plot --in "$OUT/num_iter_${HIGH}_sweep.json" --in "$OUT/num_iter_${LOW}_sweep.json" \
  --out "$OUT/num_iter_sweep.svg" \
  --title "gka local, $MODEL model, 2 prefill + 2 decode: decode num_iter $HIGH vs $LOW - 2 CPU cores, not model speed"
