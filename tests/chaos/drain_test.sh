#!/usr/bin/env bash
# Graceful drain on SIGTERM under load (a rolling update, one worker at a time):
#   a decode worker, then a prefill worker, gets SIGTERM while a closed-loop load runs. Each
#   must deregister at once (the router places nothing new on it: no retries are counted,
#   and the router reports it gone within a heartbeat), not lose a request (every request of
#   the load ends OK) — the decode worker moves its running sequences to the other decode
#   worker (gka_migrations_total{result="ok"} grows, no move fails) and so exits long before
#   its grace; the prefill worker finishes its prompts — exit by itself within its grace, and
#   its replacement (`gka local --restart`) registers and takes traffic. Afterwards every
#   worker's KV pages and state slots are back to 0.
#   drain_test.sh BIN_DIR
set -uo pipefail
BIN=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/cluster.sh"
cluster_test_setup "$BIN"

GRACE_MS=20000
start_cluster "$TMP" --port 0 --router-args "--heartbeat-timeout-ms 1500" \
  --prefill-args "--shutdown-grace-ms $GRACE_MS" --decode-args "--shutdown-grace-ms $GRACE_MS" ||
  fail "no cluster"
wait_router

drain() {  # role index
  local role=$1 i=$2 pid before after t0 t_gone t_exit moved0 failed0
  pid=$(field "$role" "$i" pid)
  before=$(metric_sum "$RMETRICS" '^gka_retries_total')
  moved0=$(migrations ok)
  failed0=$(migrations failed)
  timeout 120 "$GKA" bench serve --addr "$ADDR" --concurrency 4 --duration 8 --input-len 8:48 \
    --output-len 60:120 --ignore-eos --timeout 60 --request-id-prefix "drain-$role" \
    --save-requests --out "$TMP/$role.json" --plot "$TMP/$role.svg" >/dev/null 2>"$TMP/$role.err" &
  local bench=$!
  sleep 3
  local busy
  busy=$(metric_sum "$(field "$role" "$i" metrics)" '^gka_(kv_pages|state_slots)_used|^gka_prefill_queue_tokens')
  t0=$(date +%s%N)
  kill -TERM "$pid"
  # Deregistered at once: the router stops counting it healthy well within a heartbeat timeout.
  t_gone=""
  for _ in $(seq 1 50); do
    if [[ $(healthy "$role") -le 1 ]]; then t_gone=$(( ($(date +%s%N) - t0) / 1000000 )); break; fi
    sleep 0.05
  done
  [[ -n $t_gone ]] || fail "$role-$i still placed on 2.5 s after SIGTERM"
  # It exits by itself, after its requests finished, within the grace period.
  t_exit=$(wait_exit "$pid" $GRACE_MS "$t0")
  [[ -n $t_exit ]] || fail "$role-$i did not exit within its grace"
  wait $bench || fail "bench failed: $(tail -3 "$TMP/$role.err")"
  read -r sent ok retry hung other _ toks < <(node "$HERE/classify.js" "$TMP/$role.json" 60)
  after=$(metric_sum "$RMETRICS" '^gka_retries_total')
  local moved failed_moves
  moved=$(($(migrations ok) - moved0))
  failed_moves=$(($(migrations failed) - failed0))
  echo "   drain $role-$i: in use when signalled $busy; deregistered after ${t_gone} ms, exited after ${t_exit} ms;" \
    "load: sent $sent ok $ok retryable $retry hung $hung other $other; router retries $((after - before));" \
    "sequences moved $moved, failed moves $failed_moves"
  [[ $role != decode || $busy -gt 0 ]] || fail "$role-$i was idle when signalled: the test would prove nothing"
  [[ $ok == "$sent" ]] || fail "requests were lost in the drain of $role-$i (sent $sent, ok $ok)"
  [[ $after == "$before" ]] || fail "the router placed work on the draining $role-$i (retries $before -> $after)"
  if [[ $role == decode ]]; then
    [[ $moved -gt 0 ]] || fail "the draining decode-$i moved no running sequence"
    [[ $failed_moves == 0 ]] || fail "$failed_moves moves from decode-$i failed"
    [[ $t_exit -lt $((GRACE_MS / 2)) ]] || fail "decode-$i took ${t_exit} ms to exit: it waited instead of moving"
  fi
  # The replacement registers and takes traffic.
  # (The signalled one has exited: a second healthy worker of its role is the replacement.)
  wait_healthy "$role" 2 || fail "the restarted $role-$i did not register"
}

echo "-- SIGTERM a decode worker under load"
drain decode 0
echo "-- SIGTERM a prefill worker under load"
drain prefill 1
echo "-- the restarted workers serve; pages and slots back at 0"
"$GKA" bench serve --addr "$ADDR" --concurrency 4 --num-requests 16 --input-len 8:48 --output-len 8:24 \
  --ignore-eos --timeout 60 --save-requests --out "$TMP/after.json" --plot "$TMP/after.svg" >/dev/null 2>&1
read -r sent ok _ < <(node "$HERE/classify.js" "$TMP/after.json" 60)
[[ $ok == 16 ]] || fail "after the drains: $ok of 16 requests ok"
used=$(wait_pages_free)
[[ $used == 0 ]] || fail "$used pages/slots still in use"
echo "drain_test: ok"
