#!/usr/bin/env bash
# Issues 11, 4 and 9 on the GPU machine, one device call: `gka local` with GPU workers serving
# the 32B-shaped random-weight model, disaggregated (prefill TP 2 on GPUs 0,1 → decode TP 2 on
# GPUs 2,3) and colocated (two workers at TP 2 on the same four GPUs, each prefilling and
# decoding in one engine). Per mode: TTFT at low load for 2K/8K/16K prompts, the hand-off's
# bandwidth (KV and GKA state apart, from the prefill worker's /metrics), a mixed load (long
# prompts arriving while others decode: decode ITL and long-prompt TTFT, goodput), greedy
# agreement with the offline GPU engine; then (stage `sweep`) a request-rate sweep through the
# disaggregated cluster. Prints a table last.
#
#   scripts/gpu/cluster_pack.sh cluster build-wgpu          # on the dev machine
#   device run (nvidia-h100-x4, carry .devcarry/cluster):
#     bash scripts/gpu/cluster_serve.sh [STAGES...]        # default: disagg colo
#   dry run here on the CPU with the tiny model:
#     BIN=build/bin MODEL=/tmp/tiny BACKEND=cpu SIZES=64,128 scripts/gpu/cluster_serve.sh disagg
#
# Layout of the disaggregated run: PTP/DTP (TP sizes, default 2/2), PGPUS/DGPUS (default
# 0,1 and 2,3).
# Stages: disagg | colo | sweep (with disagg: a rate sweep before its cluster stops) | link
# (ucx_perftest, then the disaggregated cluster with --stream-handoff=false: the link's rates)
# | ladder (the rate sweep LADDER_RATES at num_iter 30 without and with a degrade ladder). Env: BUDGET_S (default 570), SIZES (prompt lengths),
# MIX_S (mixed-load seconds; 0 skips it), GREEDY=0 (skip the greedy check), MODEL (default /dev/shm/gka32b, written if missing).
set -uo pipefail
STAGES=${*:-disagg colo}
END=$((SECONDS + ${BUDGET_S:-570}))
LOGS=${OUT:-/tmp/gka-cluster}
mkdir -p "$LOGS"
D=.devcarry/cluster
if [[ -f $D/bundle.tar.xz ]]; then  # scripts/gpu/cluster_pack.sh cluster
  rm -rf /tmp/gka-cluster-carry && mkdir -p /tmp/gka-cluster-carry &&
    xz -dc $D/bundle.tar.xz | tar -C /tmp/gka-cluster-carry -xf - && D=/tmp/gka-cluster-carry
fi
BIN=${BIN:-$D/bin}
BACKEND=${BACKEND:-cuda}
SIZES=${SIZES:-2048,8192,16384}
MIX_S=${MIX_S:-45}
MODEL=${MODEL:-/dev/shm/gka32b}
TABLE=$LOGS/table.txt
: > "$TABLE"
export NCCL_NVLS_ENABLE=0  # never NVLink multicast on these shared hosts (KINDS.md)

if [[ $BACKEND == cuda ]]; then
  NCCL_DIR=$(python3 -c 'import nvidia.nccl as n, os; print(os.path.join(list(n.__path__)[0], "lib"))' 2>/dev/null)
  export LD_LIBRARY_PATH=$D/lib:${NCCL_DIR}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  export UCX_MODULE_DIR=$D/lib/ucx
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  ldd "$BIN/gka-decode-worker" | grep -E "not found|nccl|cublas" | sed 's/^/  /'
  TOK=$D/tokenizer
fi
left() { echo $((END - SECONDS)); }

if [[ -n ${SMALL:-} && ! -f $MODEL/config.json ]]; then
  # SMALL=1: a small random hybrid at head_dim 128 (the real per-head shape), for a quick check
  # that GPU workers serve at all before the 32B runs.
  "$BIN/gka" make-tiny-model --out "$MODEL" --head-dim 128 --heads 8 --kv-heads 4 --hidden 1024 \
    --dtype bf16 --tokenizer-dir "$TOK" 2>&1 | tail -1
fi
if [[ ! -f $MODEL/config.json ]]; then
  t0=$SECONDS
  timeout "$(left)" "$BIN/gka" make-random-model --preset hqwen3-32b-gka --out "$MODEL" \
    --tokenizer-dir "$TOK" 2>&1 | tail -2
  echo "model written in $((SECONDS - t0)) s"
fi

# 32B at TP 2: 64 KiB of KV and 4 MiB of GKA state per token / per slot on each rank; the
# decode side holds 24 sequences of up to 17K tokens beside 32 GB of weights per GPU.
COMMON_DECODE=${COMMON_DECODE-"--max-seq-len 17408"}
PREFILL_ARGS=${PREFILL_ARGS:-"--num-slots 4 --max-seq-len 17408 --max-batch-tokens 16384 --prefill-chunk 8192"}
CLUSTER_PID=""
start_cluster() {  # start_cluster MODE: disagg or colo
  local mode=$1 args
  if [[ $mode == disagg ]]; then
    args=(--prefill-workers 1 --decode-workers 1 --prefill-tp "${PTP:-2}" --decode-tp "${DTP:-2}"
          --prefill-gpus "${PGPUS:-0,1}" --decode-gpus "${DGPUS:-2,3}" --prefill-args "$PREFILL_ARGS"
          --decode-args "$COMMON_DECODE")
  else
    # Two workers at TP 2 on the same four GPUs, each prefilling 8K-token chunks into its own
    # decode batch (gka local passes the chunking flags to every colocated worker).
    args=(--colocated --decode-workers "${CWORKERS:-2}" --decode-tp "${DTP:-2}"
          --decode-gpus "${CGPUS:-0,1,2,3}" --max-batch-tokens "${CBATCH:-8192}"
          --prefill-chunk-size "${CCHUNK:-8192}" --decode-args "$COMMON_DECODE")
  fi
  if [[ $BACKEND == cpu ]]; then  # the dry run: one worker of each role, no GPUs
    args=(--prefill-workers 1 --decode-workers 1)
    [[ $mode == colo ]] && args=(--colocated --decode-workers 1 --max-batch-tokens 512 --prefill-chunk-size 256)
  fi
  rm -rf "$LOGS/$mode" && mkdir -p "$LOGS/$mode"
  local t0=$SECONDS
  "$BIN/gka" local --model "$MODEL" --backend "$BACKEND" --port 50151 --metrics-port 9500 \
    --ready-timeout 300 --page-size 64 --num-slots 24 --state-file "$LOGS/$mode/state.jsonl" --log-dir "$LOGS/$mode" \
    --http-port 8151 "${args[@]}" ${EXTRA_LOCAL:-} > "$LOGS/$mode/local.out" 2>&1 &
  CLUSTER_PID=$!
  for _ in $(seq 1 600); do
    grep -q "cluster up" "$LOGS/$mode/local.out" 2>/dev/null && break
    kill -0 $CLUSTER_PID 2>/dev/null || break
    sleep 0.5
  done
  if ! kill -0 $CLUSTER_PID 2>/dev/null; then
    echo "!! $mode cluster did not start"; tail -20 "$LOGS/$mode/local.out"
    tail -n 15 "$LOGS/$mode"/*.log 2>/dev/null; return 1
  fi
  echo "$mode cluster up in $((SECONDS - t0)) s"
}
stop_cluster() {
  [[ -n $CLUSTER_PID ]] && kill -TERM $CLUSTER_PID 2>/dev/null && wait $CLUSTER_PID 2>/dev/null
  CLUSTER_PID=""
}
trap stop_cluster EXIT

bench() {  # bench NAME ARGS...: gka bench serve against the local cluster, JSON in $LOGS
  local name=$1; shift
  local l; l=$(left); (( l > 15 )) || { echo "skip $name: no time"; return 1; }
  timeout "$l" "$BIN/gka" bench serve --addr 127.0.0.1:50151 --prompt tokens --ignore-eos \
    --out "$LOGS/$name.json" --label "$name" "$@" 2> "$LOGS/$name.err" || {
      echo "!! $name failed"; tail -5 "$LOGS/$name.err"; return 1; }
}
# "p50 p99" of a report metric: jq-free (python3 is on the GPU machine and here).
pct() {  # pct FILE METRIC (ttft_ms|itl_ms|tpot_ms|e2e_ms) [goodput|max]
  python3 - "$@" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["report"]["overall"]
if len(sys.argv) > 3 and sys.argv[3] == "max": print(f'{r[sys.argv[2]].get("max", 0):.0f}'); sys.exit()
if len(sys.argv) > 3: print(f'{r.get("goodput", 0):.3f}'); sys.exit()
m = r[sys.argv[2]]
print(f'{m.get("p50", 0):.1f} {m.get("p99", 0):.1f}')
EOF
}
metric_sum() {  # metric_sum URL NAME [LABEL_SUBSTRING]: sum of a Prometheus series
  curl -s "$1" | awk -v n="$2" -v s="${3:-}" '$1 ~ "^"n && index($1, s) {t += $2} END {printf "%.6g", t}'
}

sweep() {  # sweep [TAG]: a request-rate sweep through the running disaggregated cluster (issue 9)
  local tag=${1:-sweep}
  bench "$tag" --sweep "${RATES:-0.5,1,2}" --duration "${SWEEP_S:-25}" --input-len 2048 \
    --output-len 256 --slo ttft=2000ms,itl=100ms --timeout 300 --plot "$LOGS/$tag.svg" || return
  python3 - "$LOGS/$tag.json" "$tag" >> "$TABLE" <<'EOF'
import json, sys
for p in json.load(open(sys.argv[1]))["points"]:
    o = p["report"]["overall"]
    it = o.get("decode_num_iter", {})
    print(f'SWEEP {sys.argv[2]} rate={p["request_rate"]} decode num_iter {it} ttft p50/p99={o["ttft_ms"]["p50"]:.0f}/{o["ttft_ms"]["p99"]:.0f}ms '
          f'itl p50/p99={o["itl_ms"]["p50"]:.1f}/{o["itl_ms"]["p99"]:.1f}ms '
          f'tok/s={o["output_token_throughput"]:.0f} goodput={o.get("goodput", 0):.2f}/s')
EOF
}

greedy() {  # greedy MODE: greedy completions with logprobs through the OpenAI port, one at a time
  python3 - "$LOGS/$1-greedy.json" "${SIZES}" <<'EOF'
import json, random, sys, urllib.request
out, sizes = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
base = "http://127.0.0.1:8151/v1"
model = json.load(urllib.request.urlopen(base + "/models", timeout=30))["data"][0]["id"]
res = []
for i, n in enumerate([100] + sizes):
    rng = random.Random(1000 + i)
    body = {"model": model, "prompt": [rng.randrange(100, 150000) for _ in range(n)], "max_tokens": 32,
            "temperature": 0, "logprobs": 5, "ignore_eos": True}
    req = urllib.request.Request(base + "/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    lp = json.load(urllib.request.urlopen(req, timeout=300))["choices"][0]["logprobs"]
    res.append({"prompt_len": n, "tokens": lp["tokens"], "logprobs": lp["token_logprobs"],
                "top": lp["top_logprobs"]})
json.dump(res, open(out, "w"))
EOF
}
compare_greedy() {  # disaggregated vs colocated: same prompts, greedy, bf16
  # Teacher-forced where the two greedy streams agree: at each such position both paths saw the
  # same token sequence, so their top-5 logprobs are compared entry by entry; at the first
  # divergence the gap between the two best logprobs shows whether it was a bf16 near-tie.
  python3 - "$LOGS/disagg-greedy.json" "$LOGS/colo-greedy.json" >> "$TABLE" <<'EOF'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
for x, y in zip(a, b):
    n = min(len(x["tokens"]), len(y["tokens"]))
    same = 0
    while same < n and x["tokens"][same] == y["tokens"][same]:
        same += 1
    d = 0.0
    for i in range(min(same + 1, n)):  # the divergent position too: same history up to it
        tx, ty = x["top"][i] or {}, y["top"][i] or {}
        d = max([d] + [abs(tx[k] - ty[k]) for k in tx.keys() & ty.keys()])
    tie = ""
    if same < n:
        lp = sorted((x["top"][same] or {}).values(), reverse=True)
        tie = f'; at the divergence top-2 gap {lp[0] - lp[1]:.3g}' if len(lp) > 1 else ""
    print(f'GREEDY prompt={x["prompt_len"]}: disagg vs colo: first {same}/{n} tokens equal, '
          f'max |dlogprob| over top-5 at {min(same + 1, n)} teacher-forced positions {d:.3g}{tie}')
EOF
}

run_mode() {  # run_mode MODE [TAG]: TAG names its rows and files (default MODE)
  local mode=$1 tag=${2:-$1}
  start_cluster "$mode" || return 1
  # Warm up: one request per size (first-use allocations, graph captures).
  for n in ${SIZES//,/ }; do bench "$tag-warm-$n" --concurrency 1 --num-requests 1 \
    --input-len "$n" --output-len 4 >/dev/null; done
  [[ ${GREEDY:-1} == 1 ]] && { greedy "$tag" || echo "!! greedy $tag failed"; }
  for n in ${SIZES//,/ }; do
    local kv0 st0 kvs0 sts0 tail0 str0
    if [[ $mode == disagg ]]; then
      local pm=http://127.0.0.1:9501/metrics
      kv0=$(metric_sum $pm gka_transfer_bytes_total 'kind="kv"')
      st0=$(metric_sum $pm gka_transfer_bytes_total 'kind="state"')
      kvs0=$(metric_sum $pm gka_transfer_seconds_sum 'kind="kv"')
      sts0=$(metric_sum $pm gka_transfer_seconds_sum 'kind="state"')
      tail0=$(metric_sum $pm gka_prefill_transfer_tail_seconds_sum)
      str0=$(metric_sum $pm gka_prefill_streamed_bytes_total)
    fi
    bench "$tag-ttft-$n" --concurrency 1 --num-requests 3 --input-len "$n" --output-len 8 || continue
    read -r p50 p99 <<< "$(pct "$LOGS/$tag-ttft-$n.json" ttft_ms)"
    local xfer=""
    if [[ $mode == disagg ]]; then
      local kv st kvs sts
      kv=$(metric_sum $pm gka_transfer_bytes_total 'kind="kv"')
      st=$(metric_sum $pm gka_transfer_bytes_total 'kind="state"')
      kvs=$(metric_sum $pm gka_transfer_seconds_sum 'kind="kv"')
      sts=$(metric_sum $pm gka_transfer_seconds_sum 'kind="state"')
      local tail str
      tail=$(metric_sum $pm gka_prefill_transfer_tail_seconds_sum)
      str=$(metric_sum $pm gka_prefill_streamed_bytes_total)
      # With the streamed hand-off (the default) the kv time spans the prefill it hides behind,
      # so its GB/s is not the link's: PREFILL_ARGS=--stream-handoff=false measures the link.
      # tail = end of the last prefill step -> completion acknowledged (what TTFT pays).
      xfer=$(python3 -c "
kv, st, kvs, sts = $kv - $kv0, $st - $st0, $kvs - $kvs0, $sts - $sts0
tail, streamed = $tail - $tail0, $str - $str0
f = lambda b, s: f'{b/3/2**20:.0f} MiB {b/s/1e9:.2f} GB/s' if s > 0 else '-'
share = f'{streamed / (kv + st) * 100:.0f} %' if kv + st > 0 else '-'
print(f'KV {f(kv, kvs)}, state {f(st, sts)} (per request; kv {kvs/3*1e3:.0f} ms, state {sts/3*1e3:.0f} ms); '
      f'tail {tail/3*1e3:.1f} ms = {tail/3*1e3/$p50*100:.1f} % of TTFT p50, {share} streamed before the last step ended')")
    fi
    # The router's breakdown of each request's TTFT (Final timings): queue (admission -> prefill
    # start, incl. the decode worker's Reserve), prefill compute, hand-off.
    local srv
    srv=$(python3 -c "
import json
o = json.load(open('$LOGS/$tag-ttft-$n.json'))['report']['overall']
print('/'.join(f\"{o.get(k, {}).get('p50', 0):.1f}\" for k in ('server_queue_ms', 'server_prefill_ms', 'server_transfer_ms')))")
    echo "TTFT $tag prompt=$n p50=${p50}ms p99=${p99}ms server queue/prefill/transfer p50=${srv}ms ${xfer}" | tee -a "$TABLE"
  done
  # Mixed load: a decode-heavy stream (short prompts, long outputs) while 16K prompts arrive.
  local long=${SIZES##*,}
  if (( MIX_S == 0 )); then
    [[ $mode == disagg && " $STAGES " == *" sweep "* ]] && sweep
    stop_cluster; return
  fi
  bench "$tag-mix-decode" --concurrency 8 --input-len 512 --output-len "${MIX_OUT:-512}" --duration "$MIX_S" \
    --slo ttft=2000ms,itl=100ms --timeout 600 &
  local dec=$!
  sleep 5
  bench "$tag-mix-long" --request-rate 0.2 --arrival constant --input-len "$long" --output-len 16 \
    --duration $((MIX_S - 10)) --slo ttft=6000ms,itl=100ms --timeout 600
  wait $dec
  if [[ -f $LOGS/$tag-mix-decode.json && -f $LOGS/$tag-mix-long.json ]]; then
    read -r i50 i99 <<< "$(pct "$LOGS/$tag-mix-decode.json" itl_ms)"
    read -r t50 t99 <<< "$(pct "$LOGS/$tag-mix-long.json" ttft_ms)"
    read -r o50 o99 <<< "$(pct "$LOGS/$tag-mix-decode.json" tpot_ms)"
    # A prefill in the decoders' engine stalls them once per chunk: one long gap per stream,
    # rarer than 1 % of the gaps, so ITL max and the per-request TPOT p99 are where it shows.
    echo "MIX $tag decode-ITL p50=${i50}ms p99=${i99}ms max=$(pct "$LOGS/$tag-mix-decode.json" itl_ms max)ms TPOT p50=${o50}ms p99=${o99}ms goodput=$(pct "$LOGS/$tag-mix-decode.json" x g)/s; long-prompt TTFT p50=${t50}ms p99=${t99}ms goodput=$(pct "$LOGS/$tag-mix-long.json" x g)/s" | tee -a "$TABLE"
  fi
  [[ $mode == disagg && " $STAGES " == *" sweep "* ]] && sweep
  stop_cluster
}

ladder() {  # issue 9 on the GPU: the same rate sweep without and with a degrade ladder
  # One tier at num_iter 30; the ladder lowers decode/prefill num_iter to 10, then 1, while
  # requests wait longer than 200 ms in the router's queue (and raises it again after).
  cat > "$LOGS/base-tiers.json" <<'JSON'
{"default": "standard",
 "tiers": [{"name": "standard", "prefill_num_iter": 30, "decode_num_iter": 30, "queue_limit": 64}]}
JSON
  cat > "$LOGS/ladder-tiers.json" <<'JSON'
{"default": "standard",
 "tiers": [{"name": "standard", "prefill_num_iter": 30, "decode_num_iter": 30, "queue_limit": 64,
            "degrade_ladder": [{"decode_num_iter": 10, "prefill_num_iter": 10},
                               {"decode_num_iter": 1, "prefill_num_iter": 1}],
            "degrade_queue_ms": 200}]}
JSON
  local cfg
  for cfg in base ladder; do
    EXTRA_LOCAL="--tiers $LOGS/$cfg-tiers.json" start_cluster disagg || return 1
    bench "$cfg-warm" --concurrency 1 --num-requests 1 --input-len 2048 --output-len 4 >/dev/null
    RATES=${LADDER_RATES:-1,2,4,6} SWEEP_S=${LADDER_S:-20} sweep "$cfg-sweep"
    stop_cluster
  done
  [[ -f $LOGS/base-sweep.json && -f $LOGS/ladder-sweep.json ]] &&
    "$BIN/gka" bench plot --in "$LOGS/base-sweep.json" --in "$LOGS/ladder-sweep.json" \
      --out "$LOGS/ladder.svg" 2>/dev/null
}

link() {  # the hand-off's link: UCX's raw put rate, then the cluster with streaming off
  if [[ -x $BIN/ucx_perftest ]]; then
    local port=$((13000 + RANDOM % 2000))
    UCX_TLS=${LINK_TLS:-sm} "$BIN/ucx_perftest" -p $port >/dev/null 2>&1 &
    local srv=$!
    sleep 1
    local mbs
    mbs=$(UCX_TLS=${LINK_TLS:-sm} timeout 60 "$BIN/ucx_perftest" 127.0.0.1 -p $port -t ucp_put_bw \
      -s 67108864 -n 20 2>&1 | awk '/Final/ {print $(NF-2)}')
    wait $srv 2>/dev/null
    echo "LINK ucx_perftest ucp_put_bw UCX_TLS=${LINK_TLS:-sm} 64 MiB: ${mbs:-?} MB/s (2^20 B)" | tee -a "$TABLE"
  fi
  # Without streaming the hand-off starts after the last step: its per-kind seconds are the
  # link's (copy to staging, puts, completion), so KV and state GB/s are the link's rates.
  PREFILL_ARGS="$PREFILL_ARGS --stream-handoff=false" run_mode disagg link
}

for stage in $STAGES; do
  case $stage in
    disagg|colo) run_mode "$stage" ;;
    link) link ;;
    ladder) ladder ;;
    sweep) ;;  # inside the disaggregated run (the cluster is up)
    *) echo "unknown stage $stage" ;;
  esac
done
[[ -f $LOGS/disagg-greedy.json && -f $LOGS/colo-greedy.json ]] && compare_greedy
echo "== table ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
cat "$TABLE"
