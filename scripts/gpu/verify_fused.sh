#!/bin/bash
# One device call (carry .devcarry/tp and .devcarry/cuda, built by tp_collect.sh and collect_cuda.sh): correctness of the fused-projection CUDA code and the new sampling kernel,
# then the fused vs unfused 32B decode A/B at TP 4.
START=$SECONDS
export OUT=${OUT:-/tmp/out}
mkdir -p $OUT/cuda $OUT/tp
echo "######## CUDA parity (all ops, incl. SampleTopLogprobs)"
OUT=$OUT/cuda BUNDLE=.devcarry/cuda/bundle.tar.xz PARITY_TIMEOUT=60 bash scripts/gpu/run_all.sh parity '*' 2>&1 | tail -40
echo "######## engine CUDA graphs + goldens (bench cut short)"
OUT=$OUT/cuda BUNDLE=.devcarry/cuda/bundle.tar.xz ENGINE_BENCH_TIMEOUT=40 bash scripts/gpu/run_all.sh graphs 2>&1 | grep -v "^  " | tail -30
echo "######## elapsed $((SECONDS-START)) s"
OUT=$OUT/tp BUDGET_S=$((${TOTAL:-400} - (SECONDS-START))) bash scripts/gpu/tp_bench.sh fuse tests fuse_ab 2>&1 | tail -60
echo "######## elapsed $((SECONDS-START)) s"
cat $OUT/tp/table.txt 2>/dev/null
