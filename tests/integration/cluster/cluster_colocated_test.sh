#!/usr/bin/env bash
# Colocated serving: `gka local --colocated` answers exactly as the offline engine.
#   cluster_colocated_test.sh BIN_DIR KIND
# Starts `gka local --colocated` (router + colocated decode workers, no prefill worker: each
# worker prefills its prompts itself, in chunks of 8 tokens under a 16-token step budget mixed
# with its running decode batch), sends 16 requests at once — short ones and prompts of up
# to ~150 tokens, in two tiers whose prefill and decode num_iter differ — and compares each
# answer with `gka generate --model` run offline with the same num_iter values.
# KIND: tiny (2 workers at TP=1; make-tiny-model with the real tokenizer; text prompts) or
# tp2 (1 worker at TP=2, one engine thread per rank; 8 heads / 4 KV heads; token-id prompts).
set -euo pipefail
BIN=$1
KIND=${2:-tiny}
GKA=$BIN/gka
. "$(dirname "$0")/lib.sh"
cluster_tmp
export UCX_TLS=tcp

if [[ $KIND == tiny ]]; then
  "$GKA" make-tiny-model --out "$TMP/m" 2>/dev/null
  WORKERS=2; TP=1
else
  "$GKA" make-tiny-model --out "$TMP/m" --no-tokenizer --pattern '*-GKA-*-GKA' --heads 8 \
    --kv-heads 4 --head-dim 16 --hidden 64 --intermediate 128 --vocab 512 2>/dev/null
  WORKERS=1; TP=2
fi
write_tiers "$TMP/tiers.json"

"$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --colocated --decode-workers $WORKERS \
  --decode-tp $TP --max-batch-tokens 16 --prefill-chunk-size 8 --tiers "$TMP/tiers.json" \
  --state-file "$TMP/state" --log-dir "$TMP" >"$TMP/local.out" &
LOCAL_PID=$!
wait_cluster $((1 + WORKERS))
# No prefill worker was started; the router serves with the colocated workers alone.
if grep -q '"role":"prefill"' "$TMP/state"; then echo "gka local --colocated started a prefill worker"; exit 1; fi
grep -q "at TP=$TP:" "$TMP"/decode-0.log || { cat "$TMP"/decode-0.log >&2; echo "worker not at TP=$TP"; exit 1; }

prompt_args() {  # i -> PROMPT=(flag value); every fourth prompt is long (chunked over many steps)
  local reps=$(( $1 % 4 == 3 ? 12 : 1 ))
  if [[ $KIND == tiny ]]; then
    local texts=("Hello" "The capital of France is" "Write a haiku about GPUs" "1 2 3 4 5 6 7"
                 "你好，世界" $'def f(x):\n    return' "Once upon a time" "Linear attention is")
    local text="" r
    for r in $(seq 1 $reps); do text+="${texts[$(( ($1 + r) % 8 ))]} "; done
    PROMPT=(--prompt "$text#$1")
  else
    local ids="" n=$(( (5 + ($1 * 13) % 40) * reps / (reps > 1 ? 3 : 1) ))
    for j in $(seq 1 $n); do ids+="$(( (j * 31 + $1 * 7) % 500 )),"; done
    PROMPT=(--prompt-ids "${ids%,}")
  fi
}

TIERS=(interactive:30:30 batch:10:1)
send_requests 16 7  # the long prompts 11 and 15 arrive while the earlier requests decode
# Same tokens; the worker that decoded also prefilled (served_by), with the tier's num_iter.
compare_offline 16 "colocated cluster" 'const s=a.served_by;
  if (!s.decode_worker_id || s.prefill_worker_id!==s.decode_worker_id || a.prefill_num_iter!==pn) {console.log("served_by", s, "prefill_num_iter", a.prefill_num_iter); process.exit(1)}'

# Some step fed prompt chunks and decode tokens together (chunked prefill mixed with decode).
mixed=$(node -e '
  const lines=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse);
  (async()=>{let n=0;for (const l of lines.filter(l=>l.role==="decode")) {
    const t=await (await fetch("http://"+l.metrics+"/metrics")).text();
    for (const m of t.matchAll(/^gka_decode_mixed_steps_total\{[^}]*\} (\S+)$/gm)) n+=+m[1];}
  console.log(n)})()' "$TMP/state")
[[ $mixed -gt 0 ]] || { echo "no step mixed prompt chunks with decode tokens"; exit 1; }
echo "cluster_colocated_test ($KIND: $WORKERS colocated worker(s) at TP=$TP): 16/16 requests equal the offline engine, $mixed mixed steps"
