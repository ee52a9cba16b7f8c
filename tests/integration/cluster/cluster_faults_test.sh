#!/usr/bin/env bash
# Faults through a real local cluster (2 prefill + 2 decode workers, UCX over tcp):
#   1. bad requests get INVALID_ARGUMENT and the servers keep serving;
#   2. kill -9 of a prefill worker under load: requests are retried and complete;
#   3. kill -9 of a decode worker under load: its requests end with a retryable UNAVAILABLE
#      within their deadline, the others complete; `gka local --restart` brings it back;
#   4. afterwards every decode worker's KV pages and state slots are back to zero;
#   and clients hanging up mid-stream free their pages and slots at once.
set -euo pipefail
BIN=$1
export UCX_TLS=${2:-tcp}
GKA=$BIN/gka
. "$(dirname "$0")/lib.sh"
cluster_tmp
"$GKA" make-tiny-model --out "$TMP/m" 2>/dev/null
"$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --prefill-workers 2 --decode-workers 2 \
  --restart --state-file "$TMP/state" --log-dir "$TMP" >"$TMP/local.out" &
LOCAL_PID=$!
wait_cluster 5
field() {  # role index key
  node -e 'const [r,i,k]=process.argv.slice(1); for (const l of require("fs").readFileSync(process.argv[4],"utf8").split("\n")) { if(!l) continue; const o=JSON.parse(l); if (o.role===r && o.index==i) console.log(o[k]); }' "$1" "$2" "$3" "$TMP/state"
}

echo "-- 1. bad requests"
expect_invalid() {  # description, args...
  local what=$1; shift
  if "$GKA" generate --addr "$ADDR" "$@" --json >"$TMP/out" 2>"$TMP/err"; then
    echo "accepted: $what"; exit 1
  fi
  grep -q "INVALID_ARGUMENT" "$TMP/err" || { echo "$what: not INVALID_ARGUMENT: $(cat "$TMP/err")"; exit 1; }
}
expect_invalid "empty prompt" --prompt ""
expect_invalid "max tokens 0" --prompt "hi" --max-tokens 0
expect_invalid "max tokens past the context" --prompt "hi" --max-tokens 100000
expect_invalid "unknown tier" --prompt "hi" --tier no-such-tier
expect_invalid "negative temperature" --prompt "hi" --temperature -1
expect_invalid "top_p above 1" --prompt "hi" --top-p 1.5
expect_invalid "invalid UTF-8" --prompt $'bad \xff\xfe bytes'
expect_invalid "token id past the vocabulary" --prompt-ids 1,999999
"$GKA" generate --addr "$ADDR" --prompt "still serving" --max-tokens 4 --temperature 0 --json >/dev/null

load() {  # n max_tokens tag -> starts n requests in the background, pids in PIDS
  PIDS=()
  for i in $(seq 1 "$1"); do
    timeout 120 "$GKA" generate --addr "$ADDR" --prompt-ids "$i,2,3,4,5,6,7,8" --max-tokens "$2" \
      --temperature 0 --ignore-eos --json >"$TMP/$3.$i.out" 2>"$TMP/$3.$i.err" &
    PIDS+=($!)
  done
}
collect() {  # tag -> counts ok / unavailable / other; fails on a hang (timeout 124)
  OK=0 UNAVAIL=0 OTHER=0
  local i=0
  for p in "${PIDS[@]}"; do
    i=$((i + 1))
    if wait "$p"; then OK=$((OK + 1));
    else
      rc=$?
      [[ $rc -eq 124 ]] && { echo "request $i of $1 hung"; exit 1; }
      if grep -q "UNAVAILABLE" "$TMP/$1.$i.err"; then UNAVAIL=$((UNAVAIL + 1)); else OTHER=$((OTHER + 1)); cat "$TMP/$1.$i.err"; fi
    fi
  done
  echo "   $1: ok=$OK unavailable=$UNAVAIL other=$OTHER"
}

echo "-- 2. long prompts after short ones (freed pages reused next to each other)"
long=$(node -e 'console.log(Array.from({length: 300}, (_, i) => (i * 7919) % 150000 + 5).join(","))')
for it in $(seq 1 8); do
  short=()
  for k in 1 2 3; do
    "$GKA" generate --addr "$ADDR" --prompt "Pick a word:" --max-tokens 4 --temperature 1 --seed "$k$it" --json >/dev/null 2>&1 &
    short+=($!)
  done
  wait "${short[@]}"  # not a bare wait: gka local is a background job too
  "$GKA" generate --addr "$ADDR" --prompt-ids "$long" --max-tokens 4 --json >"$TMP/long.out" 2>&1 ||
    { echo "a 300-token prompt failed: $(tail -1 "$TMP/long.out")"; exit 1; }
done

echo "-- 2b. clients that hang up mid-stream"
pages_used() {  # sum of every decode worker's used pages and slots
  local total=0
  for i in 0 1; do
    body=$(curl -s "http://$(field decode $i metrics)/metrics")
    total=$((total + $(grep -E '^gka_(kv_pages|state_slots)_used' <<<"$body" | awk '{s += $2} END {print s + 0}')))
  done
  echo $total
}
load 6 2000 cancel
sleep 2
busy=$(pages_used)
[[ $busy -gt 0 ]] || { echo "no pages in use while 6 requests decode: the gauge check would be vacuous"; exit 1; }
for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
sleep 1
left=$(pages_used)
[[ $left == 0 ]] || { echo "$left pages/slots still held after the clients left (were $busy)"; exit 1; }
echo "   pages+slots in use: $busy while decoding, 0 after the clients hung up"

echo "-- 3. kill -9 a prefill worker under load"
load 12 24 prefill
sleep 0.3
kill -9 "$(field prefill 0 pid)"
collect prefill
[[ $OTHER -eq 0 && $UNAVAIL -eq 0 ]] || { echo "prefill failure must be retried, not surfaced"; exit 1; }

echo "-- 4. kill -9 a decode worker under load"
sleep 3  # let the restarted prefill worker register
load 12 400 decode
sleep 2
kill -9 "$(field decode 0 pid)"
collect decode
[[ $OTHER -eq 0 ]] || { echo "decode death must give UNAVAILABLE (retryable), not another error"; exit 1; }
[[ $OK -ge 1 ]] || { echo "requests on the surviving decode worker must complete"; exit 1; }

echo "-- 5. pages and slots back at baseline"
for _ in $(seq 1 100); do  # the restarted decode worker re-registers
  [[ $(field decode 0 pid) != "" ]] && "$GKA" health --addr "$ADDR" --timeout 5 >/dev/null 2>&1 && break
  sleep 0.2
done
"$GKA" generate --addr "$ADDR" --prompt "after the storm" --max-tokens 4 --temperature 0 --json >/dev/null
sleep 1
for i in 0 1; do
  m=$(field decode $i metrics)
  body=$(curl -s "http://$m/metrics")
  series=$(grep -cE '^gka_(kv_pages|state_slots)_used' <<<"$body" || true)
  [[ $series -ge 2 ]] || { echo "decode-$i exports no page/slot gauges"; exit 1; }
  used=$(grep -E '^gka_(kv_pages|state_slots)_used' <<<"$body" | awk '{s += $2} END {print s + 0}')
  [[ $used == 0 ]] || { echo "decode-$i still holds $used pages/slots"; grep -E '^gka_(kv_pages|state_slots)_used' <<<"$body"; exit 1; }
done
echo "cluster_faults_test: ok"
