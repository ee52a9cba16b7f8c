#!/usr/bin/env bash
# gka bench serve against a live `gka local` cluster (router + 1 prefill + 1 decode worker as
# real processes, the tiny model): a closed-loop run over two tiers, a two-rate sweep, a trace,
# and `gka bench direct` straight to the two workers. The JSON must add up (every request
# accounted for, tokens = requests x --output-len with --ignore-eos, each tier served with its
# own decode num_iter) and the plots must be valid SVG.
#   bench_cluster_smoke_test.sh BIN_DIR
set -euo pipefail
BIN=$1
GKA=$BIN/gka
TMP=$(mktemp -d)
source "$(dirname "$0")/../../tools/bench/local_cluster.sh"
cleanup() {
  stop_local_cluster
  rm -rf "$TMP"
}
trap cleanup EXIT
json() {  # json FILE EXPR -> prints the JS expression's value over the file's JSON `j`
  node -e 'const j=require(process.argv[1]); console.log(eval(process.argv[2]))' "$1" "$2"
}
expect() {  # expect WHAT ACTUAL EXPECTED
  if [[ "$2" != "$3" ]]; then echo "FAIL: $1: got $2, want $3"; exit 1; fi
}

make_tiny_model_and_tiers "$BIN" "$TMP"
start_local_cluster "$BIN" "$TMP/m" "$TMP/tiers.json" 1 1 "$TMP"

timeout 40 "$GKA" bench serve --addr "$ADDR" --concurrency 2 --num-requests 8 --input-len 16 \
  --output-len 6 --ignore-eos --tier-mix interactive=0.5,standard=0.5 --slo ttft=20s,e2e=30s \
  --seed 3 --out "$TMP/run.json" --save-requests 2>"$TMP/bench.err" || { cat "$TMP/bench.err"; exit 1; }
R="$TMP/run.json"
expect "ok" "$(json "$R" j.report.overall.requests.ok)" 8
expect "failed" "$(json "$R" j.report.overall.requests.failed)" 0
expect "output tokens" "$(json "$R" j.report.overall.output_tokens)" 48
expect "prompt tokens" "$(json "$R" j.report.overall.input_tokens)" 128
expect "tiers add up" "$(json "$R" 'Object.values(j.report.tiers).reduce((a,t)=>a+t.requests.sent,0)')" 8
expect "TTFT samples" "$(json "$R" j.report.overall.ttft_ms.count)" 8
expect "ITL samples = chunks - 1" "$(json "$R" j.report.overall.itl_ms.count)" \
  "$(json "$R" 'j.requests.reduce((a,r)=>a+r.chunks_ms_tokens.length-1,0)')"
expect "goodput counts every request" "$(json "$R" j.report.overall.good_requests)" 8
expect "each tier got its num_iter" \
  "$(json "$R" 'j.requests.every(r=>r.decode_num_iter===(r.tier==="interactive"?30:10))')" true
expect "TTFT includes the server's" \
  "$(json "$R" 'j.requests.every(r=>r.chunks_ms_tokens[0][0]-r.sent_ms>=r.server_ttft_ms-1)')" true
expect "machine named" "$(json "$R" 'j.machine.cpus>0')" true

timeout 40 "$GKA" bench serve --addr "$ADDR" --sweep 5,10 --num-requests 6 --input-len 8 \
  --output-len 4 --ignore-eos --arrival constant --label smoke --out "$TMP/sweep.json" \
  2>"$TMP/sweep.err" || { cat "$TMP/sweep.err"; exit 1; }
expect "sweep points" "$(json "$TMP/sweep.json" j.points.length)" 2
expect "sweep requests" "$(json "$TMP/sweep.json" 'j.points.map(p=>p.report.overall.requests.ok).join()')" "6,6"
# Text prompts, and a trace replayed at its own timestamps (0, 200, 400 ms).
printf '%s\n' '{"timestamp": 0, "prompt": "The capital of France is", "output_length": 3}' \
  '{"timestamp": 200, "input_length": 5, "output_length": 2, "tier": "interactive"}' \
  '{"timestamp": 400, "token_ids": [11, 12, 13], "output_length": 4}' >"$TMP/trace.jsonl"
timeout 30 "$GKA" bench serve --addr "$ADDR" --trace "$TMP/trace.jsonl" --prompt text --ignore-eos \
  --save-requests --out "$TMP/trace.json" 2>"$TMP/trace.err" || { cat "$TMP/trace.err"; exit 1; }
expect "trace requests ok" "$(json "$TMP/trace.json" j.report.overall.requests.ok)" 3
expect "trace output tokens" "$(json "$TMP/trace.json" j.report.overall.output_tokens)" 9
expect "trace schedule" "$(json "$TMP/trace.json" 'j.requests.map(r=>r.scheduled_ms).join()')" "0,200,400"
expect "trace tier" "$(json "$TMP/trace.json" 'j.requests[1].decode_num_iter')" 30

# The router's job done by the client, straight to the two workers (the router-overhead
# baseline): every request completes with exactly --output-len tokens. The workers' ports are
# mutual TLS: the client certificate gka local made in <log-dir>/tls.
timeout 40 "$GKA" bench direct --prefill "$(cluster_address prefill "$TMP")" \
  --decode "$(cluster_address decode "$TMP")" "${WORKER_TLS[@]}" \
  --concurrency 2 --num-requests 6 --input-len 8 --output-len 5 --warmup-requests 1 \
  --vocab 1000 --out "$TMP/direct.json" 2>"$TMP/direct.err" || { cat "$TMP/direct.err"; exit 1; }
expect "direct ok" "$(json "$TMP/direct.json" j.report.overall.requests.ok)" 6
expect "direct output tokens" "$(json "$TMP/direct.json" j.report.overall.output_tokens)" 30
expect "direct TTFT samples" "$(json "$TMP/direct.json" j.report.overall.ttft_ms.count)" 6

"$GKA" bench plot --in "$TMP/sweep.json" --in "$TMP/sweep.json" --out "$TMP/overlay.svg"
for svg in "$TMP/run.svg" "$TMP/sweep.svg" "$TMP/overlay.svg"; do
  if command -v xmllint >/dev/null; then xmllint --noout "$svg"; fi
  grep -q '<path d="M' "$svg" || { echo "FAIL: $svg has no line"; exit 1; }
done
echo "PASS"
