# Sourced by the chaos tests: a `gka local` cluster of 2 prefill + 2 decode workers that
# restarts what dies, and the probes the tests read it with.
#   start_cluster TMP [gka local flags...]   (sets LOCAL_PID; the state file is TMP/state;
#                                             PREFILL_WORKERS / DECODE_WORKERS: 2 each unless set)
#   field ROLE INDEX KEY                     (pid, grpc, metrics of a process, from the state)
#   metric_sum ADDR REGEX                    (sum of the /metrics series matching REGEX)
#   healthy ROLE                             (workers of ROLE the router counts healthy)
#   used_pages                               (KV pages + state slots in use on every worker)
#   cluster_test_setup BIN_DIR               (GKA, UCX over tcp, TMP and an exit trap that stops
#                                             the cluster and ROGUE_PID if set, and removes TMP
#                                             unless KEEP_TMP is set)
#   fail MESSAGE                             (prints the test's name, MESSAGE and the last lines
#                                             of every log; exits 1)
#   wait_router [TIMEOUT_S]                  (ADDR and RMETRICS, the router's gRPC and metrics
#                                             addresses, once it answers health; else fail)
#   wait_healthy ROLE N                      (up to 30 s for N workers of ROLE healthy; else 1)
#   wait_exit PID GRACE_MS T0_NS             (the ms from T0_NS (date +%s%N) to PID's exit,
#                                             waiting up to GRACE_MS + 2 s; empty if it lives)
#   wait_pages_free                          (up to 15 s for used_pages 0; prints the last count)
#   migrations RESULT                        (the router's gka_migrations_total{result=RESULT})
#   token_ids FILE                           (the token ids of a `gka generate --json` answer,
#                                             as a JSON array; FILE - reads stdin)
#   offline_token_ids IDS MAX_TOKENS [FLAGS] (the offline engine's token ids for prompt ids IDS
#                                             at the default tier's num_iter 10/10)
#   plaintext_worker_refused WANT            (an --insecure decode worker (ROGUE_PID) tries to
#                                             register; fails unless WANT decode workers stay
#                                             the only healthy ones)
#   tls_call WANT ADDR METHOD REQUEST [FLAGS] (tls_client.py: one gRPC call; fails unless its
#                                             status code is WANT; FLAGS: --ca/--cert/--key...)
# Needs GKA (the gka binary) and node.
CLUSTER_SH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cluster_test_setup() {
  GKA=$1/gka
  export UCX_TLS=tcp
  TMP=$(mktemp -d)
  trap cluster_test_cleanup EXIT
}

cluster_test_cleanup() {
  [[ -n ${ROGUE_PID:-} ]] && kill -TERM "$ROGUE_PID" 2>/dev/null  # a worker started beside it
  [[ -n ${LOCAL_PID:-} ]] && kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
  if [[ -n ${KEEP_TMP:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}

start_cluster() {
  CLUSTER_TMP=$1; shift
  "$GKA" make-tiny-model --out "$CLUSTER_TMP/m" 2>/dev/null
  local p=${PREFILL_WORKERS:-2} d=${DECODE_WORKERS:-2}
  "$GKA" local --model "$CLUSTER_TMP/m" --metrics-port 0 --prefill-workers "$p" --decode-workers "$d" \
    --restart --state-file "$CLUSTER_TMP/state" --log-dir "$CLUSTER_TMP" "$@" \
    >"$CLUSTER_TMP/local.out" &
  LOCAL_PID=$!
  for _ in $(seq 1 600); do
    [[ -s $CLUSTER_TMP/state && $(wc -l <"$CLUSTER_TMP/state") -ge $((1 + p + d)) ]] && return 0
    kill -0 $LOCAL_PID 2>/dev/null || { cat "$CLUSTER_TMP"/*.log >&2; echo "gka local died"; return 1; }
    sleep 0.2
  done
  echo "the cluster did not start"
  return 1
}

field() {
  node -e 'const [r,i,k,f]=process.argv.slice(1); for (const l of require("fs").readFileSync(f,"utf8").split("\n")) { if(!l) continue; const o=JSON.parse(l); if (o.role===r && o.index==i) console.log(o[k]); }' \
    "$1" "$2" "$3" "$CLUSTER_TMP/state"
}

metric_sum() {
  curl -s --max-time 2 "http://$1/metrics" | grep -E "$2" | awk '{s += $2} END {print s + 0}'
}

healthy() {
  metric_sum "$(field router 0 metrics)" "^gka_workers\\{role=\"$1\",state=\"healthy\"\\}"
}

# EXTRA_METRICS: further workers' metrics addresses (a worker started outside gka local).
used_pages() {
  local total=0 m
  for m in $(field prefill 0 metrics) $(field prefill 1 metrics) $(field decode 0 metrics) \
    $(field decode 1 metrics) ${EXTRA_METRICS:-}; do
    total=$((total + $(metric_sum "$m" '^gka_(kv_pages|state_slots)_used')))
  done
  echo $total
}

fail() {
  echo "$(basename "$0" .sh): $*"
  tail -n 5 "$TMP"/*.log 2>/dev/null
  exit 1
}

wait_router() {
  ADDR=$(field router 0 grpc)
  RMETRICS=$(field router 0 metrics)
  "$GKA" health --addr "$ADDR" --timeout "${1:-30}" >/dev/null || fail "the router is not healthy"
}

wait_healthy() {
  for _ in $(seq 1 150); do
    [[ $(healthy "$1") -ge $2 ]] && return 0
    sleep 0.2
  done
  return 1
}

wait_exit() {
  for _ in $(seq 1 $(($2 / 50 + 40))); do
    if ! kill -0 "$1" 2>/dev/null; then echo $((($(date +%s%N) - $3) / 1000000)); return 0; fi
    sleep 0.05
  done
}

wait_pages_free() {
  local u
  for _ in $(seq 1 75); do
    u=$(used_pages)
    [[ $u == 0 ]] && break
    sleep 0.2
  done
  echo "$u"
}

migrations() {
  metric_sum "$(field router 0 metrics)" "^gka_migrations_total\\{.*result=\"$1\""
}

token_ids() {
  node -e 'const f = process.argv[1] === "-" ? 0 : process.argv[1];
           console.log(JSON.stringify(JSON.parse(require("fs").readFileSync(f, "utf8")).token_ids))' \
    "$1"
}

offline_token_ids() {
  local ids=$1 max_tokens=$2; shift 2
  "$GKA" generate --model "$CLUSTER_TMP/m" --prompt-ids "$ids" --max-tokens "$max_tokens" "$@" \
    --ignore-eos --prefill-num-iter 10 --decode-num-iter 10 --json 2>/dev/null | token_ids -
}

plaintext_worker_refused() {
  "$(dirname "$GKA")/gka-decode-worker" --model "$CLUSTER_TMP/m" \
    --router "$(field router 0 internal)" --port 0 --metrics-port -1 --worker-id rogue-decode \
    --insecure >/dev/null 2>"$TMP/rogue.log" &
  ROGUE_PID=$!
  sleep 3
  [[ $(healthy decode) == "$1" ]] ||
    fail "decode workers healthy: $(healthy decode), want $1 (a plaintext worker joined?)"
  echo "   a plaintext worker could not register (decode workers healthy: $1)"
}

tls_call() {
  local want=$1 addr=$2 got; shift 2
  got=$(/usr/bin/python3 "$CLUSTER_SH_DIR/tls_client.py" "$addr" "$@" 2>>"$TMP/client.err" |
    awk '{print $1}')
  [[ $got == "$want" ]] ||
    fail "client $addr $*: got $got, want $want ($(tail -1 "$TMP/client.err"))"
}
