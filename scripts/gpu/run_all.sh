#!/bin/bash
# One device call: environment check, the CUDA parity test (every op vs the CPU reference),
# then the kernel benchmarks; prints a short table last. Run on the GPU machine from the
# repository root with the collected binaries carried (scripts/gpu/collect.sh):
#
#   device run: bash scripts/gpu/run_all.sh [all|parity|golden|bench|sanitize|check|gka-prefill]
#                                           [gtest filter]
#   (carry: .devcarry/gpu)
#
# all = parity + golden + bench. gka-prefill = the GkaCore parity cases and the GKA core
# benchmark rows under each prefill path (GKA_CUDA_GKA_PREFILL = fp32, tf32x3, sequential),
# plus, with GRAPHS=1, a whole decode step eager vs as one CUDA graph. golden runs `gka eval --backend cuda` (fp32 and bf16) on the
# authors' tiny model against their strict fp32 golden with `gka compare`.
#
# Full logs go to $OUT (the device tool's output folder) when set, else /tmp/gka-gpu.
set -uo pipefail
MODE=${1:-all}
FILTER=${2:-*}
LOGS=${OUT:-/tmp/gka-gpu}
mkdir -p "$LOGS"
CARRY=/tmp/gka-carry
rm -rf "$CARRY" && mkdir -p "$CARRY"
xz -dc .devcarry/gpu/bundle.tar.xz | tar -C "$CARRY" -xf - || { echo "no bundle: run scripts/gpu/collect.sh and carry .devcarry/gpu"; exit 2; }

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv 2>&1 | head -3
ldd --version | head -1
# cuBLAS comes from the machine (it is far too large to carry): the toolkit's, else pip's.
CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s, "lib") for p in nvidia.__path__ for s in ("cu13", "cublas")))' 2>/dev/null); do
  if [[ -e "$d/libcublas.so.13" ]]; then CUBLAS_DIR=$d; break; fi
done
echo "cuBLAS from: ${CUBLAS_DIR:-NOT FOUND}"
export LD_LIBRARY_PATH="$CARRY/lib:${CUBLAS_DIR}:${LD_LIBRARY_PATH:-}"
# Our libstdc++ only if the machine's lacks a symbol version we need.
if ldd "$CARRY/bin/cuda_parity_test" 2>&1 | grep -q "GLIBCXX\|not found"; then
  echo "using carried libstdc++"
  export LD_LIBRARY_PATH="$CARRY/compat:$LD_LIBRARY_PATH"
fi
ldd "$CARRY/bin/cuda_parity_test" | grep -E "not found|cublas|absl_status\.|stdc" | sed 's/^/  /'
[[ "$MODE" == "check" ]] && { "$CARRY/bin/cuda_parity_test" --gtest_filter='*FillAndConvert*'; exit $?; }

rc=0
if [[ "$MODE" == "gka-prefill" ]]; then
  # PARITY_PATHS / BENCH_PATHS pick the prefill paths; GRAPHS=1 adds the decode-step CUDA graph
  # rows (cuda_kernels_bench --graphs).
  for path in ${PARITY_PATHS:-fp32 tf32x3}; do
    echo "== parity GkaCore, GKA_CUDA_GKA_PREFILL=$path"
    GKA_CUDA_GKA_PREFILL=$path timeout ${PARITY_TIMEOUT:-180} "$CARRY/bin/cuda_parity_test" \
      --gtest_color=no --gtest_filter='*GkaCore*' >"$LOGS/parity_gka_$path.log" 2>&1 || rc=1
    grep -E "^\[ parity|^\[  (PASSED|FAILED)|Failure$" "$LOGS/parity_gka_$path.log" | sed 's/^/  /'
  done
  runs=()
  for path in ${BENCH_PATHS:-fp32 tf32x3 sequential}; do
    # fp32 also times the GKA decode rows (after the copy and GEMM ceilings).
    args=$([[ $path == fp32 ]] && echo --gka || echo --gka-prefill)
    GKA_CUDA_GKA_PREFILL=$path timeout 120 "$CARRY/bin/cuda_kernels_bench" $args \
      >"$LOGS/bench_$path.log" 2>&1 || rc=1
    runs+=("$path")
  done
  if [[ -n "${GRAPHS:-}" ]]; then
    timeout 120 "$CARRY/bin/cuda_kernels_bench" --graphs >"$LOGS/bench_graphs.log" 2>&1 || rc=1
    runs+=(graphs)
  fi
  for r in "${runs[@]}"; do
    sed -n '/^==== CUDA kernels/,$p' "$LOGS/bench_$r.log"; grep -iE "error|fail" "$LOGS/bench_$r.log" | head -3
  done
  exit $rc
fi
if [[ "$MODE" == "sanitize" ]]; then
  # memcheck over every op's parity cases (cuBLAS excluded: not ours), racecheck over the
  # kernels that share data through shared memory. Slow: minutes.
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  echo "== compute-sanitizer memcheck"
  timeout ${SAN_TIMEOUT:-420} "$CS" --tool memcheck --leak-check full --error-exitcode 3 \
    "$CARRY/bin/cuda_parity_test" --gtest_filter="${FILTER/#\*/-*Gemm*}" >"$LOGS/memcheck.log" 2>&1
  echo "  memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|out of bounds|\[  (PASSED|FAILED)" "$LOGS/memcheck.log" | head -20
  echo "== compute-sanitizer racecheck (GkaCore, PagedAttention, Sample)"
  timeout ${SAN_TIMEOUT:-420} "$CS" --tool racecheck --error-exitcode 3 \
    "$CARRY/bin/cuda_parity_test" --gtest_filter='*GkaCore*:*PagedAttention*:*Sample*' \
    >"$LOGS/racecheck.log" 2>&1
  echo "  racecheck rc=$?"; grep -E "RACECHECK SUMMARY|hazard|\[  (PASSED|FAILED)" "$LOGS/racecheck.log" | head -20
  exit 0
fi
if [[ "$MODE" == "all" || "$MODE" == "parity" ]]; then
  echo "== parity (CUDA vs CPU reference), one process per test so a fault stays contained"
  : >"$LOGS/parity.log"
  tests=$("$CARRY/bin/cuda_parity_test" --gtest_list_tests --gtest_filter="$FILTER" |
          awk '/^[^ ]/ {s=$1} /^  / {print s $1}')
  for t in $tests; do
    timeout ${PARITY_TIMEOUT:-180} "$CARRY/bin/cuda_parity_test" --gtest_color=no \
      --gtest_filter="$t" >>"$LOGS/parity.log" 2>&1
    r=$?
    if [[ $r -ne 0 ]]; then rc=1; echo "  FAIL ($r) $t"; else echo "  ok   $t"; fi
  done
  grep -E "^\[ (parity)" "$LOGS/parity.log" | awk '
    /\[ parity/ { n++; if ($0 ~ /non_finite=[1-9]/) bad++ } END { print "  parity lines:", n, " with non-finite:", bad+0 }'
  grep -E -A4 "Failure$" "$LOGS/parity.log" | head -60
fi
if [[ ( "$MODE" == "all" || "$MODE" == "golden" ) && -x "$CARRY/bin/gka" ]]; then
  echo "== golden: gka eval --backend cuda on the authors' tiny model vs their strict fp32 golden"
  D=tests/data/authors_tiny
  G=$D/eval_L64_it30.safetensors
  for dt in fp32 bf16; do
    "$CARRY/bin/gka" eval --model $D/hybrid_fp32 --inputs $G --backend cuda --dtype $dt \
      --out "$LOGS/eval_cuda_$dt.safetensors" >"$LOGS/golden_$dt.log" 2>&1 || { rc=1; tail -5 "$LOGS/golden_$dt.log"; }
    # fp32: as tight as the CPU engine (1e-4); bf16: model-spec §10 (logits 3e-2, states 1e-2).
    tol=$([[ $dt == fp32 ]] && echo 1e-4 || echo 3e-2)
    echo "-- --dtype $dt (tolerance $tol)"
    "$CARRY/bin/gka" compare --expected $G --actual "$LOGS/eval_cuda_$dt.safetensors" --tol $tol \
      >"$LOGS/compare_$dt.log" 2>&1 || rc=1
    grep -E "logits|all |exceed" "$LOGS/compare_$dt.log" | head -8
    grep -E "state" "$LOGS/compare_$dt.log" | sort -k2 -g | tail -2
  done
  if [[ -x "$CARRY/bin/gpu_golden_test" ]]; then
    echo "-- tests/golden/gpu_golden_test (the engine's own GPU golden test)"
    timeout 300 "$CARRY/bin/gpu_golden_test" --gtest_color=no >"$LOGS/gpu_golden_test.log" 2>&1 || rc=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure$" "$LOGS/gpu_golden_test.log" | head -10
  fi
  if [[ -f $D/authors_bf16_L64_it30.safetensors ]]; then
    echo "-- the authors' own bf16 run vs their strict fp32 golden, for comparison"
    "$CARRY/bin/gka" compare --expected $G --actual $D/authors_bf16_L64_it30.safetensors \
      --keys prefill_logits,decode_logits --tol 1 2>&1 | grep -E "logits" | head -4
  fi
fi
if [[ "$MODE" == "all" || "$MODE" == "bench" ]]; then
  echo "== benchmarks"
  timeout ${BENCH_TIMEOUT:-240} "$CARRY/bin/cuda_kernels_bench" ${BENCH_ARGS:-} >"$LOGS/bench.log" 2>&1 || rc=$?
  tail -5 "$LOGS/bench.log" | grep -v "^====" >/dev/null
  sed -n '/^==== CUDA kernels/,$p' "$LOGS/bench.log"
  grep -iE "error|fail" "$LOGS/bench.log" | head -5
fi
exit $rc
