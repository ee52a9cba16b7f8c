#!/usr/bin/env bash
# Issue 11 on the GPU machine, one device call: the copy + poly61 kernel's parity test, the
# engine → staging → UCX → engine hand-off test (teacher-forced logits vs the colocated
# engine), then the hand-off bandwidth table (host link, kernel, whole staged transfers of the
# 32B shape's per-rank state at TP=2 for 2K/8K/16K prompts) beside ucx_perftest on the same
# transport. Binaries and their Debian libraries (UCX, Abseil, xxhash; the cma module, which
# ldd does not show) are built on the dev machine and carried in .devcarry/workers
# (scripts/gpu/cluster_pack.sh); cuBLAS comes from the machine's CUDA.
#
#   device run: carry .devcarry/workers, command: bash scripts/gpu/cluster_bench.sh
set -u
D=.devcarry/workers
export LD_LIBRARY_PATH=$D/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
export UCX_MODULE_DIR=$PWD/$D/lib/ucx
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=index,name,pcie.link.gen.current,pcie.link.width.current \
  --format=csv,noheader
echo "== copy + poly61 parity (CUDA vs CPU reference)"
timeout 120 $D/bin/copy_checksum_test 2>&1 | grep -E "seed|OK \]|FAILED|PASSED|Failure|expected" | head -20
echo "== staged hand-off on the GPU, teacher-forced logits vs the colocated engine"
timeout 180 $D/bin/staged_handoff_test 2>&1 | grep -vE "^\[ RUN|^\[-+\]|^$" | head -40
echo "== hand-off bandwidth"
timeout 240 $D/bin/staged_transfer_bench --tls sm --tp 2 --prompts 2048,8192,16384 --iters 3 \
  2>&1 | tee $OUT/staged_transfer_bench_sm.txt
echo "== ucx_perftest, same transport (sm), host memory, 64 MiB puts"
port=$((13000 + RANDOM % 2000))
UCX_TLS=sm $D/bin/ucx_perftest -p $port >/dev/null 2>&1 &
srv=$!
sleep 1
UCX_TLS=sm timeout 60 $D/bin/ucx_perftest 127.0.0.1 -p $port -t ucp_put_bw -s 67108864 -n 20 \
  2>&1 | grep -E "Final|Error|error" | head -5
wait $srv 2>/dev/null
echo "(ucx_perftest columns: ... bandwidth MB/s average / overall)"
