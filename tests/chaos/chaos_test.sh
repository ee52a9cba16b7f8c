#!/usr/bin/env bash
# Chaos under load: a local cluster (router + 2 prefill + 2 decode workers, real processes on
# 127.0.0.1, UCX over tcp) serves a steady load (`gka bench serve`)
# (open loop, 2 requests/s, at most 4 in flight) and greedy checkers while one fault is
# injected per scenario:
#   kill -9 of a prefill worker, a decode worker, the router (each restarted by
#   `gka local --restart`); SIGSTOP of a decode / prefill worker for longer than the heartbeat
#   timeout and the lease, then SIGCONT; transfer faults through the prefill worker's
#   fault-injection hooks (a flipped byte, a completion delayed past the lease, writes delayed
#   past the lease, a completion that never comes, a completion naming another generation, a
#   put the transport reports failed; a flipped byte on the first attempt only, which the
#   router must retry on other workers);
#   a decode worker in its own network namespace cut off (veth link down) and reconnected.
# For every scenario it asserts: no request outlives its deadline (hung); every failure is a
# retryable code (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED), except the faulted requests,
# which must fail (never OK) with a classified error (those of a fault the router recovers
# from, "-retried", must all end OK instead); greedy checkers get exactly the offline
# engine's tokens whenever they succeed (no request sees another's tokens or a corrupted
# state); every worker's KV pages and state slots return to 0; the restarted / thawed workers
# rejoin (router reports 2 + 2 healthy); and a load after the fault completes in full
# (goodput recovers). Prints the table and exits 1 if any row fails.
#   chaos_test.sh BIN_DIR [SCENARIO...]      (default: all)
# Time scale: leases 4 s, heartbeat timeout 1.5 s, so freezes of 4 s exceed both.
set -uo pipefail
BIN=$(cd "$1" && pwd); shift
HERE=$(cd "$(dirname "$0")" && pwd)
export UCX_TLS=tcp
# The host-side workers' UCX on the host's uplink (the device of its default route), not the
# loopback `gka local` keeps it on by default: the partition scenario's namespace worker must
# reach them. Only that device: a worker must not take another test's veth for its lane (the
# drain bug in tests/RELIABILITY.md).
UPLINK=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
[[ -n $UPLINK ]] || UPLINK=$(ip -4 -o addr show scope global | awk '{print $2; exit}')
[[ -n $UPLINK ]] && export UCX_NET_DEVICES=${UCX_NET_DEVICES:-$UPLINK}
GKA=$BIN/gka
TMP=$(mktemp -d)
NS=gkachaos$$  # network namespace of the partition scenario
cleanup() {
  touch "$TMP/stop"
  [[ -n ${NS_PID:-} ]] && kill -TERM "$NS_PID" 2>/dev/null
  [[ -n ${LOCAL_PID:-} ]] && kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
  ip link del "${NS:0:10}h" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  if [[ -n ${KEEP_TMP:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

LOAD_S=8          # seconds of load per scenario
REQ_TIMEOUT=20    # client deadline per request; a request still running then is "hung"
LEASE_MS=4000
HEARTBEAT_TIMEOUT_MS=1500
FREEZE_S=4        # > lease and > heartbeat timeout
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(baseline kill9-prefill kill9-decode kill9-router
  sigstop-decode sigstop-prefill fault-corrupt fault-delay-completion fault-delay-puts
  fault-drop-completion fault-stale-generation fault-fail-put fault-corrupt-retried
  partition-decode)

source "$HERE/cluster.sh"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A fixed port, so the restarted router is found where the killed one was. The router listens
# on every address so a worker in another network namespace reaches it. Its channels check
# workers' certificates against "localhost" (every certificate gka local makes names it): the
# namespace's worker is dialled at an address no certificate carries.
start_cluster "$TMP" --port "$PORT" \
  --router-args "--host 0.0.0.0 --heartbeat-timeout-ms $HEARTBEAT_TIMEOUT_MS --lease-ms $LEASE_MS --tls-server-name localhost" \
  --prefill-args "--fault-injection" \
  --decode-args "--default-lease-ms $LEASE_MS --max-lease-ms $LEASE_MS --fence-timeout-ms 1000" ||
  exit 1
ADDR=127.0.0.1:$PORT
ROUTER_INTERNAL=$(field router 0 internal)  # where workers register (mutual TLS)
"$GKA" health --addr "$ADDR" --timeout 30 >/dev/null || { echo "router not healthy"; exit 1; }

WANT_DECODE=2  # 3 once the partition scenario's worker joined
wait_rejoined() {  # up to 30 s for every worker healthy again and a healthy router
  for _ in $(seq 1 150); do
    if "$GKA" health --addr "$ADDR" --timeout 1 >/dev/null 2>&1 &&
      [[ $(healthy prefill) -ge 2 && $(healthy decode) -ge $WANT_DECODE ]]; then return 0; fi
    sleep 0.2
  done
  return 1
}

# Greedy references from the offline engine (the default tier is standard: num_iter 10/10).
PROMPTS=("3,14,15,92,65,35,89,79,32,38,46" "2,71,82,81,82,84,59,4,52,35,36,2,87,47,13,52,66")
for k in 0 1; do
  offline_token_ids "${PROMPTS[$k]}" 12 --temperature 0 >"$TMP/ref.$k"
  [[ -s $TMP/ref.$k ]] || { echo "offline reference failed"; exit 1; }
done
checker() {  # k -> sends prompt k greedily until $TMP/stop exists; one outcome per line
  local k=$1 n=0 out
  while [[ ! -e $TMP/stop ]]; do
    n=$((n + 1))
    out=$TMP/check.$k.$n
    if timeout "$REQ_TIMEOUT" "$GKA" generate --addr "$ADDR" --prompt-ids "${PROMPTS[$k]}" \
      --max-tokens 12 --temperature 0 --ignore-eos --json >"$out.json" 2>"$out.err"; then
      got=$(token_ids "$out.json")
      if [[ $got == "$(cat "$TMP/ref.$k")" ]]; then echo ok; else echo "wrong $got"; fi
    else
      rc=$?
      if [[ $rc -eq 124 ]]; then echo hung
      elif grep -qE 'UNAVAILABLE|RESOURCE_EXHAUSTED|ABORTED' "$out.err"; then echo retryable
      else echo "other $(tail -1 "$out.err")"; fi
    fi
  done >"$TMP/checker.$k"
}

bench() {  # out prefix request-timeout-s extra-args... (random token prompts)
  local out=$1 prefix=$2 deadline=$3; shift 3
  timeout $((deadline * 4 + LOAD_S + 30)) "$GKA" bench serve --addr "$ADDR" --input-len 8:48 \
    --output-len 8:40 --ignore-eos --timeout "$deadline" --request-id-prefix "$prefix" \
    --save-requests --out "$out" --plot "$out.svg" "$@" >/dev/null 2>"$out.err"
}

# Partition: one more decode worker, in its own network namespace joined by a veth pair. The
# router lists it with the others and, as it has the most free pages, places there first; the
# scenario takes the link down past the heartbeat timeout and the lease, then up again.
# The namespace routes everything through the veth (a default route via the host's end): UCX's
# tcp transport dials in both directions, to the addresses each worker advertises (the host-side
# workers advertise the uplink's, UCX_NET_DEVICES above). Without that
# route the namespace's worker could only answer on connections the prefill workers opened, and
# after a partition UCX's connection matching no longer pairs them: its wireup replies then dial,
# fail ("Network is unreachable"), and a prefill worker's new endpoint never connects (every
# transfer from it ended "waiting for the receiver to accept"; tests/RELIABILITY.md).
# Returns 1 when namespaces cannot be made here (the scenario is skipped), 2 on any other failure.
start_ns_worker() {
  local h=${NS:0:10}h n=${NS:0:10}n
  local host_ip=10.213.$(( $$ % 250 )).1 ns_ip=10.213.$(( $$ % 250 )).2
  ip netns add "$NS" 2>/dev/null || return 1
  ip link add "$h" type veth peer name "$n" &&
    ip link set "$n" netns "$NS" &&
    ip addr add "$host_ip/30" dev "$h" && ip link set "$h" up &&
    ip netns exec "$NS" ip addr add "$ns_ip/30" dev "$n" &&
    ip netns exec "$NS" ip link set "$n" up && ip netns exec "$NS" ip link set lo up &&
    ip netns exec "$NS" ip route add default via "$host_ip" || return 2
  NS_HOST_IF=$h
  # Every address a host-side worker may advertise must be reachable from the namespace.
  local a
  for a in $(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1); do
    ip netns exec "$NS" ip route get "$a" >/dev/null 2>&1 ||
      { echo "the namespace has no route to the host's $a"; return 2; }
  done
  ip netns exec "$NS" env UCX_NET_DEVICES="$n" "$BIN/gka-decode-worker" --model "$TMP/m" \
    --router "$host_ip:${ROUTER_INTERNAL##*:}" --host "$ns_ip" --port 0 --metrics-port 0 \
    --worker-id decode-ns --tls-ca "$TMP/tls/ca.pem" --tls-cert "$TMP/tls/client.pem" \
    --tls-key "$TMP/tls/client.key" --tls-server-name localhost \
    --num-slots 32 --num-pages 6000 \
    --default-lease-ms $LEASE_MS --max-lease-ms $LEASE_MS --fence-timeout-ms 1000 \
    >"$TMP/ns.out" 2>"$TMP/decode-ns.log" &
  NS_PID=$!
  for _ in $(seq 1 300); do
    [[ -s $TMP/ns.out ]] && break
    kill -0 $NS_PID 2>/dev/null || return 2
    sleep 0.2
  done
  EXTRA_METRICS=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8").split("\n")[0]).metrics)' "$TMP/ns.out")
  # Metrics are scraped from the host: through the veth.
  for _ in $(seq 1 100); do [[ $(healthy decode) -ge 3 ]] && return 0; sleep 0.2; done
  return 2
}

ROWS=()
FAILED=0
scenario() {  # name fault-function [faulted-request-prefix [faulted-must-succeed]]
  local name=$1 fault=$2 faulted=${3:-} recovers=${4:-}
  rm -f "$TMP/stop" "$TMP"/checker.*
  checker 0 & local c0=$!
  checker 1 & local c1=$!
  # Open loop, at most 4 in flight: while the router is down, failures do not spin.
  bench "$TMP/$name.json" "chaos-load-$SCENARIO_INDEX" $REQ_TIMEOUT --request-rate 2 \
    --max-concurrency 4 --duration $LOAD_S --seed $RANDOM &
  local b=$! fb=""
  if [[ -n $faulted ]]; then
    bench "$TMP/$name.faulted.json" "$faulted" $((REQ_TIMEOUT * 3)) --concurrency 1 --num-requests 2 &
    fb=$!
  fi
  sleep 2
  $fault
  wait $b; local brc=$?
  [[ -n $fb ]] && { wait $fb || brc=$?; }
  touch "$TMP/stop"
  wait $c0 $c1
  local sent ok retry hung other exp toks
  if [[ $brc -ne 0 ]]; then
    echo "$name: bench failed (rc $brc): $(tail -3 "$TMP/$name.json.err")"
    sent=0 ok=0 retry=0 hung=1 other=0 exp=0 toks=0
  else
    read -r sent ok retry hung other exp toks < <(node "$HERE/classify.js" "$TMP/$name.json" $REQ_TIMEOUT)
  fi
  # Faulted requests: any classified error is fine, OK is not (a fault must never pass).
  local f_sent=0 f_ok=0 f_hung=0 f_codes=""
  if [[ -n $faulted && -s $TMP/$name.faulted.json ]]; then
    read -r f_sent f_ok _ f_hung _ _ _ < <(node "$HERE/classify.js" "$TMP/$name.faulted.json" $((REQ_TIMEOUT * 3)) 2>/dev/null)
    f_codes=$(node -e 'const c={}; for (const r of require(process.argv[1]).requests) c[r.code]=(c[r.code]||0)+1; console.log(Object.entries(c).map(([k,v])=>k+"x"+v).join(","))' "$TMP/$name.faulted.json")
  fi
  local c_ok c_wrong c_retry c_hung c_other
  c_ok=$(cat "$TMP"/checker.* | grep -c '^ok')
  c_wrong=$(cat "$TMP"/checker.* | grep -c '^wrong')
  c_retry=$(cat "$TMP"/checker.* | grep -c '^retryable')
  c_hung=$(cat "$TMP"/checker.* | grep -c '^hung')
  c_other=$(cat "$TMP"/checker.* | grep -c '^other')
  grep -h '^wrong\|^other' "$TMP"/checker.* | head -3
  local rejoined=yes
  wait_rejoined || rejoined=no
  local leaked
  leaked=$(wait_pages_free)
  # Recovery: the same load after the fault, in full.
  local r_sent r_ok r_toks
  bench "$TMP/$name.after.json" "chaos-after-$SCENARIO_INDEX" $REQ_TIMEOUT --concurrency 4 \
    --num-requests 12 --seed 7
  read -r r_sent r_ok _ _ _ _ r_toks < <(node "$HERE/classify.js" "$TMP/$name.after.json" $REQ_TIMEOUT 2>/dev/null || echo "0 0 0 0 0 0 0")
  local verdict=pass
  # A fault the router recovers from: every faulted request ends OK; otherwise none may.
  local f_bad=$f_ok
  [[ -n $recovers ]] && f_bad=$((f_sent - f_ok))
  if ((hung + c_hung + f_hung > 0 || other + c_other > 0 || c_wrong > 0 || f_bad > 0)) ||
    [[ $leaked != 0 || $rejoined != yes || $r_ok != 12 || $brc -ne 0 ]]; then
    verdict=FAIL
    FAILED=1
  fi
  [[ -n $faulted && $f_sent -lt 2 ]] && { verdict=FAIL; FAILED=1; }
  ROWS+=("$(printf '%-24s %5s %5s %6s %5s %5s | %4s %5s %5s | %-26s | %6s %8s %9s | %s' \
    "$name" "$sent" "$ok" "$retry" "$hung" "$other" "$c_ok" "$c_retry" "$c_wrong" \
    "${f_codes:--}" "$leaked" "$rejoined" "$r_ok/$r_sent $r_toks" "$verdict")")
  echo "${ROWS[-1]}"
}

pid_of() { field "$1" "$2" pid; }
f_none() { :; }
f_kill9_prefill() { kill -9 "$(pid_of prefill 0)"; }
f_kill9_decode() { kill -9 "$(pid_of decode 0)"; }
f_kill9_router() { kill -9 "$(pid_of router 0)"; }
f_sigstop_decode() { local p; p=$(pid_of decode 1); kill -STOP "$p"; sleep $FREEZE_S; kill -CONT "$p"; }
f_sigstop_prefill() { local p; p=$(pid_of prefill 1); kill -STOP "$p"; sleep $FREEZE_S; kill -CONT "$p"; }
f_partition() {
  local busy
  busy=$(metric_sum "$EXTRA_METRICS" '^gka_(kv_pages|state_slots)_used')
  echo "   partition: decode-ns holds $busy pages+slots when its link goes down"
  ip link set "$NS_HOST_IF" down; sleep $FREEZE_S; ip link set "$NS_HOST_IF" up
}

echo "chaos: router $ADDR, 2 prefill + 2 decode workers, lease ${LEASE_MS} ms, heartbeat timeout ${HEARTBEAT_TIMEOUT_MS} ms, ${LOAD_S} s of load per scenario"
SCENARIO_INDEX=0
for s in "${SCENARIOS[@]}"; do
  SCENARIO_INDEX=$((SCENARIO_INDEX + 1))
  case $s in
    baseline) scenario "$s" f_none ;;
    kill9-prefill) scenario "$s" f_kill9_prefill ;;
    kill9-decode) scenario "$s" f_kill9_decode ;;
    kill9-router) scenario "$s" f_kill9_router ;;
    sigstop-decode) scenario "$s" f_sigstop_decode ;;
    sigstop-prefill) scenario "$s" f_sigstop_prefill ;;
    fault-corrupt) scenario "$s" f_none chaos-fault-corrupt ;;
    fault-delay-completion) scenario "$s" f_none "chaos-fault-delay-$((LEASE_MS + 2000))" ;;
    fault-delay-puts) scenario "$s" f_none "chaos-fault-delay-puts-$((LEASE_MS + 2000))" ;;
    fault-drop-completion) scenario "$s" f_none chaos-fault-freeze ;;
    fault-stale-generation) scenario "$s" f_none chaos-fault-stale-generation ;;
    fault-fail-put) scenario "$s" f_none chaos-fault-fail-put ;;
    fault-corrupt-retried) scenario "$s" f_none chaos-fault-corrupt-once recovers ;;
    partition-decode)
      start_ns_worker
      case $? in
        0) WANT_DECODE=3
           scenario "$s" f_partition ;;
        1) # Network namespaces need CAP_NET_ADMIN (root in CI containers usually has it).
           ROWS+=("$(printf '%-24s %s' "$s" "skipped: cannot create a network namespace here (needs CAP_NET_ADMIN)")")
           echo "${ROWS[-1]}" ;;
        *) ROWS+=("$(printf '%-24s %s' "$s" "FAIL: the namespace's worker did not start or join (decode-ns.log)")")
           FAILED=1
           echo "${ROWS[-1]}"; cat "$TMP/decode-ns.log" 2>/dev/null | tail -5 ;;
      esac ;;
    *) echo "unknown scenario $s"; exit 2 ;;
  esac
done

echo
echo "chaos table (bench: 2 requests/s, at most 4 in flight, ${LOAD_S} s; checkers: 2 greedy clients vs the offline engine; faulted: 2 requests with the fault's id)"
printf '%-24s %5s %5s %6s %5s %5s | %4s %5s %5s | %-26s | %6s %8s %9s | %s\n' scenario sent ok retry hung other \
  c.ok c.rtry wrong "faulted requests: codes" leaked rejoined "after ok tok/s" verdict
for r in "${ROWS[@]}"; do echo "$r"; done
# CHAOS_TABLE (ctest sets it): a copy of the table for CI to print after the suite.
if [[ -n ${CHAOS_TABLE:-} ]]; then
  { printf '%-24s %5s %5s %6s %5s %5s | %4s %5s %5s | %-26s | %6s %8s %9s | %s\n' scenario sent ok \
      retry hung other c.ok c.rtry wrong "faulted requests: codes" leaked rejoined \
      "after ok tok/s" verdict
    for r in "${ROWS[@]}"; do echo "$r"; done; } >"$CHAOS_TABLE"
fi
[[ $FAILED == 0 ]] && echo "chaos_test: ok" || { echo "chaos_test: FAILED"; exit 1; }
