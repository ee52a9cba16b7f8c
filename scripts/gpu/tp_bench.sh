#!/bin/bash
# Issue 5 on the GPU machine, one device call: NCCL version, the NCCL communicator test, TP 2/4
# vs TP 1 on GPUs (tp_gpu_test), then the 32B throughput rows (tp_throughput_bench) for the
# stages asked for. Binaries come from scripts/gpu/tp_collect.sh (carry .devcarry/tp).
#
#   device run: bash scripts/gpu/tp_bench.sh [STAGES...]     (default: tests tp4)
#   stages: smoke  a small head_dim-128 model, TP 2: prefill, two contexts, breakdown (seconds;
#                  checks the benchmark end to end)
#           tests  nccl_communicator_test + tp_gpu_test
#           tp4    hqwen3-32b-gka and qwen3-32b at TP 4: prefill 16K (GKA), decode 16K and
#                  128K (GKA with the per-op breakdown), then 32K and 64K
#           base_mid  qwen3-32b at TP 4, 32K only
#           tp2    both models at TP 2, 16K and 128K
#           tp1    both models at TP 1, 16K (128K does not fit beside 65 GB of weights)
#           fuse   fused input projections, correctness: cuda_stride_test (strided ops vs
#                  packed, bitwise), gpu_golden_test (authors' tiny model on the GPU)
#           fuse_ab  GKA-32B 16K decode at TP 4 with the per-op breakdown, fused projections
#                  (the default) then unfused (GKA_FUSE_PROJECTIONS=0), same machine
#           model  writes the GKA-32B model in the background (the next bench waits for it), so
#                  the tests of the stages in between overlap the ~96 s it takes
#           models  both models (GKA-32B and Qwen3-32B) in the background at once
#           ctx4   both models at TP 4, decode at 16K (with the breakdown), 32K, 64K and 128K
#           oneshot  the one-shot all-reduce and TP > 1 decode graphs, correctness:
#                  one_shot_all_reduce_test (bitwise vs the CPU reference, vs NCCL, calls in
#                  flight, graph replays), nccl_communicator_test, tp_gpu_test (TP 2/4 vs TP 1,
#                  graphs vs op by op at TP 2/4), cuda_parity_test (RmsNorm, CausalConv incl. the
#                  decode path), cuda_stride_test, cuda_graph_test (TP 1), gpu_golden_test
#                  (authors' tiny model; the norm and conv changes touch TP 1). A failure turns the
#                  failing feature off for the later stages (GKA_ONESHOT_ALLREDUCE=0 /
#                  GKA_CUDA_GRAPHS=0), so the call still measures what works.
#           ab     GKA-32B 16K decode at TP 4, same machine and model: graphs + one-shot (the
#                  default), then neither (session 2's configuration), then one-shot without
#                  graphs (with the per-op breakdown), then graphs with NCCL
#           tuned  the GEMM tuner and the two-shot all-reduce, correctness (a failure turns the
#                  feature off for later stages: GKA_GEMM_TUNE=0 / GKA_TWO_SHOT_MIN_BYTES=2^62):
#                  one_shot_all_reduce_test (one- and two-shot bitwise vs the CPU reference,
#                  mixed call by call, graph replays), cuda_parity_test (Gemm incl. the tuned
#                  shapes, RmsNorm), tp_gpu_test, nccl_communicator_test, cuda_graph_test,
#                  gpu_golden_test (GOLDEN_SRC=the build's source dir: linked to this copy);
#                  then decode_gemm_bench (GPU 0: cuBLAS default vs tuned, GB/s per shape and M)
#                  and all_reduce_bench (NCCL / one-shot / two-shot per message size)
#           verify  one_shot_all_reduce_test + cuda_parity_test's GEMM cases (the tuner's too)
#           prefill_bd  GKA-32B 16K prefill at TP 4 with the per-op breakdown (TFLOP/s per GEMM)
#           tp4_16k  both models, 16K decode at TP 4 with graphs (no breakdown)
#           pdl    programmatic dependent launch: cuda_parity_test, cuda_graph_test,
#                  cuda_stride_test, tp_gpu_test, gpu_golden_test (GOLDEN_SRC), then GKA-32B 16K
#                  TP 4 with PDL, without (GKA_PDL=0), with again — one machine, one model
#           pdl_rows  with PDL: Qwen3-32B 16K and 128K, GKA-32B 128K/64K/32K + 16K prefill
#           tp2_16k  GKA-32B 16K decode at TP 2
#           tuned_ab  GKA-32B 16K decode at TP 4, same machine and model: tuned GEMMs + two-shot,
#                  then neither (session 3's default: graphs + one-shot), then the same new
#                  default op by op with the per-op breakdown, then each change alone
# Models are written once per machine by the benchmark itself (--make-model) into /dev/shm
# when it has room for both (130 GB), else /tmp (disk). Logs and the table go to $OUT.
# BUDGET_S (default 575): seconds for the whole script; each step is cut to what is left.
set -uo pipefail
STAGES=${*:-tests tp4}
END=$((SECONDS + ${BUDGET_S:-575}))  # the device call's limit: each step gets what is left
# Logs here, then packed into $OUT/logs.tgz with the table ($OUT brings back at most 8 files).
LOGS=/tmp/gka-tp-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
CARRY=/tmp/gka-tp-carry
rm -rf "$CARRY" && mkdir -p "$CARRY"
BUNDLE=${BUNDLE:-.devcarry/tp/bundle.tar.xz}
xz -dc "$BUNDLE" | tar -C "$CARRY" -xf - ||
  { echo "no bundle $BUNDLE: run scripts/gpu/tp_collect.sh and carry its folder"; exit 2; }
# Never NVLink multicast on these shared hosts (KINDS.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

echo "== environment"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
nvidia-smi topo -m 2>/dev/null | head -6
NCCL_DIR=$(python3 -c 'import nvidia.nccl as n, os; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null)
[[ -e "$NCCL_DIR/libnccl.so.2" ]] || NCCL_DIR=$(dirname "$(find / -name libnccl.so.2 2>/dev/null | head -1)")
CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s, "lib") for p in nvidia.__path__ for s in ("cu13", "cublas")))' 2>/dev/null); do
  if [[ -e "$d/libcublas.so.13" ]]; then CUBLAS_DIR=$d; break; fi
done
echo "NCCL from: $NCCL_DIR ($(python3 -m pip show nvidia-nccl-cu13 2>/dev/null | grep ^Version))"
echo "cuBLAS from: ${CUBLAS_DIR:-NOT FOUND}"
export LD_LIBRARY_PATH="$CARRY/lib:$NCCL_DIR:$CUBLAS_DIR:${LD_LIBRARY_PATH:-}"
# Our libstdc++ only if the machine's lacks a symbol version we need.
if ldd "$CARRY/bin/tp_throughput_bench" 2>&1 | grep -q "GLIBCXX\|not found"; then
  export LD_LIBRARY_PATH="$CARRY/compat:$LD_LIBRARY_PATH"
fi
ldd "$CARRY/bin/tp_throughput_bench" | grep -E "not found|nccl|cublas" | sed 's/^/  /'
df -h /dev/shm /tmp | sed 's/^/  /'
BENCH="$CARRY/bin/tp_throughput_bench"
TABLE="$LOGS/table.txt"
: > "$TABLE"
MODEL_PIDS=""  # model writers running in the background; the next bench waits for them
bench() {  # bench LOGNAME ARGS...: runs the benchmark, keeps its rows for the table
  local name=$1; shift
  if [[ -n "$MODEL_PIDS" ]]; then wait $MODEL_PIDS; MODEL_PIDS=""; fi
  echo "== tp_throughput_bench $* (GKA_CUDA_GRAPHS=${GKA_CUDA_GRAPHS:-1} GKA_ONESHOT_ALLREDUCE=${GKA_ONESHOT_ALLREDUCE:-1} GKA_GEMM_TUNE=${GKA_GEMM_TUNE:-0} GKA_TWO_SHOT_MIN_BYTES=${GKA_TWO_SHOT_MIN_BYTES:-default})"
  local left=$((END - SECONDS))
  (( left > 20 )) || { echo "== skipped (no time left): $*"; return; }
  timeout $left "$BENCH" "$@" 2>&1 | tee "$LOGS/$name.log" | grep -E "^(#|DECODE|PREFILL|BREAKDOWN)|rror|watchdog|capture"
  grep -E "^(#|DECODE|PREFILL|BREAKDOWN)" "$LOGS/$name.log" >> "$TABLE"
}
# gpu_golden_test reads tests/data at the source path compiled in (GOLDEN_SRC: the dev machine's
# checkout it was built from): point that path at this copy of the repository.
link_golden_src() {
  local src=${GOLDEN_SRC:-}
  if [[ -n "$src" && ! -d "$src/tests/data" ]]; then
    mkdir -p "$(dirname "$src")" && ln -sfn "$PWD" "$src" && echo "== linked $src -> $PWD"
  fi
}
write_model() {  # write_model LOGNAME MODEL_ARGS...: the benchmark writes the model (if absent)
  local name=$1; shift  # in the background; the next bench waits for it
  echo "== writing $2 in the background"
  "$BENCH" "$@" --tp 1 --contexts "" > "$LOGS/$name.log" 2>&1 &
  MODEL_PIDS="$MODEL_PIDS $!"
}
ntest=0
gtest() {  # gtest NAME [FILTER]: one test binary, bounded, its verdict lines
  echo "== $1 ${2:-}"
  local log="$LOGS/$1.$((++ntest)).log"
  timeout $(( (END - SECONDS) < 150 ? END - SECONDS : 150 )) "$CARRY/bin/$1" \
    ${2:+--gtest_filter=$2} > "$log" 2>&1
  local t=$?
  grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |^\[ parity|^TP[0-9]|^one-shot|Failure|rror" "$log" | head -40
  (( t == 0 )) || { echo "== $1: exit $t"; rc=1; }
  return $t
}
avail_kb=$(df --output=avail -k /dev/shm | tail -1)
if (( avail_kb > 140 * 1024 * 1024 )); then MODELS=/dev/shm/gka-models; else MODELS=/tmp/gka-models; fi
GKA="--model $MODELS/hqwen3-32b-gka --make-model hqwen3-32b-gka --label GKA-32B"
BASE="--model $MODELS/qwen3-32b --make-model qwen3-32b --label Qwen3-32B"
rc=0
for stage in $STAGES; do
  case $stage in
    smoke)
      bench smoke --model /tmp/gka-smoke --make-model tiny-hd128 --tp 2 --contexts 1024,4096 \
        --steps 4 --runs 2 --max-batch 8 --prefill 2048 --breakdown --label smoke ;;
    tests)
      echo "== nccl_communicator_test"
      timeout $((END - SECONDS)) "$CARRY/bin/nccl_communicator_test" > "$LOGS/nccl_test.log" 2>&1 || rc=1
      grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |Failure|rror" "$LOGS/nccl_test.log"
      echo "== tp_gpu_test"
      timeout $((END - SECONDS)) "$CARRY/bin/tp_gpu_test" > "$LOGS/tp_gpu_test.log" 2>&1 || rc=1
      grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |^TP[0-9]|Failure|rror" "$LOGS/tp_gpu_test.log" | head -60 ;;
    tp4)
      bench gka_tp4_prefill $GKA --tp 4 --prefill 16384 --contexts ""
      bench gka_tp4 $GKA --tp 4 --contexts 16384,131072 --breakdown
      bench base_tp4 $BASE --tp 4 --contexts 16384,131072 --breakdown
      bench gka_tp4_mid $GKA --tp 4 --contexts 32768,65536
      bench base_tp4_mid $BASE --tp 4 --contexts 32768,65536 ;;
    tp2)
      bench gka_tp2 $GKA --tp 2 --contexts 16384,131072
      bench base_tp2 $BASE --tp 2 --contexts 16384,131072 ;;
    base_mid)
      bench base_tp4_mid $BASE --tp 4 --contexts 32768 ;;
    tp1)
      bench gka_tp1 $GKA --tp 1 --contexts 16384,32768
      bench base_tp1 $BASE --tp 1 --contexts 16384 ;;
    fuse)
      for t in cuda_stride_test gpu_golden_test; do
        echo "== $t"
        timeout $((END - SECONDS)) "$CARRY/bin/$t" > "$LOGS/$t.log" 2>&1 || rc=1
        grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) |Failure|rror" "$LOGS/$t.log" | head -60
      done ;;
    fuse_ab)
      bench gka_tp4_fused $GKA --tp 4 --contexts 16384 --breakdown
      GKA_FUSE_PROJECTIONS=0 bench gka_tp4_unfused $GKA --tp 4 --contexts 16384 --breakdown ;;
    model)  # writes the GKA-32B model in the background (CPU and disk) while later stages test
      write_model model $GKA ;;
    models)  # both models at once (each writer is CPU-parallel; the two overlap their writes)
      write_model model $GKA
      write_model model_base $BASE ;;
    ctx4)  # both models at TP 4 over all four contexts (16K with the per-op breakdown)
      bench gka_tp4_ctx4 $GKA --tp 4 --contexts 16384,32768,65536,131072 --breakdown
      bench base_tp4_ctx4 $BASE --tp 4 --contexts 16384,32768,65536,131072 --breakdown ;;
    oneshot)
      gtest one_shot_all_reduce_test || export GKA_ONESHOT_ALLREDUCE=0
      gtest tp_gpu_test "*Graph*" || export GKA_CUDA_GRAPHS=0
      gtest tp_gpu_test "-*Graph*"
      gtest nccl_communicator_test
      gtest cuda_parity_test "*RmsNorm*:*CausalConv*"
      gtest cuda_stride_test
      gtest cuda_graph_test
      gtest gpu_golden_test ;;
    tuned)
      link_golden_src
      gtest one_shot_all_reduce_test || export GKA_TWO_SHOT_MIN_BYTES=$((1 << 62))
      gtest cuda_parity_test "*Gemm*:*RmsNorm*" || export GKA_GEMM_TUNE=0
      gtest tp_gpu_test
      gtest nccl_communicator_test
      gtest cuda_graph_test
      gtest gpu_golden_test
      echo "== decode_gemm_bench"
      GKA_LOG_LEVEL=DEBUG timeout $((END - SECONDS)) "$CARRY/bin/decode_gemm_bench" 2>&1 | tee "$LOGS/decode_gemm_bench.log"
      grep -E "^(#|GEMM)" "$LOGS/decode_gemm_bench.log" >> "$TABLE"
      echo "== all_reduce_bench"
      timeout $((END - SECONDS)) "$CARRY/bin/all_reduce_bench" --ranks "$(nvidia-smi -L | wc -l)" \
        2>&1 | tee "$LOGS/all_reduce_bench.log"
      grep -E "^(#|ALLREDUCE)" "$LOGS/all_reduce_bench.log" >> "$TABLE" ;;
    verify)
      gtest one_shot_all_reduce_test
      gtest cuda_parity_test "*Gemm*" ;;
    prefill_bd)
      bench gka_tp4_prefill_bd $GKA --tp 4 --prefill 16384 --contexts "" --breakdown ;;
    tp4_16k)  # the 16K gate rows as served: graphs on (a --breakdown context runs op by op)
      bench gka_tp4_16k $GKA --tp 4 --contexts 16384
      bench base_tp4_16k $BASE --tp 4 --contexts 16384 ;;
    pdl)  # programmatic dependent launch: every CUDA op's parity, graphs, TP, goldens (a failure
          # turns PDL off for the later stages: GKA_PDL=0), then the 16K TP 4 A/B on one machine
      link_golden_src
      gtest cuda_parity_test || export GKA_PDL=0
      gtest cuda_graph_test || export GKA_PDL=0
      gtest cuda_stride_test || export GKA_PDL=0
      gtest tp_gpu_test || export GKA_PDL=0
      gtest gpu_golden_test || export GKA_PDL=0
      bench gka_tp4_pdl $GKA --tp 4 --contexts 16384 --label GKA-32B-pdl
      GKA_PDL=0 bench gka_tp4_nopdl $GKA --tp 4 --contexts 16384 --label GKA-32B-no-pdl
      bench gka_tp4_pdl2 $GKA --tp 4 --contexts 16384 --label GKA-32B-pdl ;;
    pdl_rows)  # with PDL: the baseline at 16K and 128K, the hybrid at 32K-128K, prefill 16K
      bench base_tp4_pdl $BASE --tp 4 --contexts 16384,131072 --label Qwen3-32B-pdl
      bench gka_tp4_pdl_mid $GKA --tp 4 --contexts 131072,65536,32768 --prefill 16384 \
        --label GKA-32B-pdl ;;
    tp2_16k)
      bench gka_tp2_16k $GKA --tp 2 --contexts 16384 ;;
    tuned_ab)
      NEVER=$((1 << 62))
      GKA_GEMM_TUNE=${GKA_GEMM_TUNE:-1} GKA_TWO_SHOT_MIN_BYTES=${GKA_TWO_SHOT_MIN_BYTES:-0} \
        bench gka_tp4_tuned $GKA --tp 4 \
        --contexts 16384 --label GKA-32B-tuned+twoshot
      GKA_GEMM_TUNE=0 GKA_TWO_SHOT_MIN_BYTES=$NEVER bench gka_tp4_s3 $GKA --tp 4 --contexts 16384 \
        --label GKA-32B-session3
      GKA_CUDA_GRAPHS=0 GKA_GEMM_TUNE=${GKA_GEMM_TUNE:-1} \
        GKA_TWO_SHOT_MIN_BYTES=${GKA_TWO_SHOT_MIN_BYTES:-0} bench gka_tp4_tuned_ops \
        $GKA --tp 4 --contexts 16384 --breakdown --label GKA-32B-tuned+twoshot-op-by-op
      GKA_GEMM_TUNE=${GKA_GEMM_TUNE:-1} GKA_TWO_SHOT_MIN_BYTES=$NEVER \
        bench gka_tp4_tuned_only $GKA --tp 4 --contexts 16384 \
        --label GKA-32B-tuned+oneshot
      GKA_GEMM_TUNE=0 GKA_TWO_SHOT_MIN_BYTES=${GKA_TWO_SHOT_MIN_BYTES:-0} bench gka_tp4_twoshot_only \
        $GKA --tp 4 --contexts 16384 --label GKA-32B-untuned+twoshot ;;
    ab)
      bench gka_tp4_new $GKA --tp 4 --contexts 16384 --label GKA-32B-graphs+oneshot
      GKA_CUDA_GRAPHS=0 GKA_ONESHOT_ALLREDUCE=0 bench gka_tp4_base $GKA --tp 4 --contexts 16384 \
        --label GKA-32B-session2
      GKA_CUDA_GRAPHS=0 bench gka_tp4_oneshot $GKA --tp 4 --contexts 16384 --breakdown \
        --label GKA-32B-oneshot
      GKA_ONESHOT_ALLREDUCE=0 bench gka_tp4_graphs $GKA --tp 4 --contexts 16384 \
        --label GKA-32B-graphs+nccl ;;
    *) echo "unknown stage $stage"; rc=2 ;;
  esac
done
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT" && tar -C "$LOGS" -czf "$OUT/logs.tgz" . && cp "$TABLE" "$OUT/table.txt"
fi
echo "== table (all rows: table.txt, logs: logs.tgz under \$OUT)"
grep -E "^(DECODE|PREFILL)" "$TABLE"
exit $rc
