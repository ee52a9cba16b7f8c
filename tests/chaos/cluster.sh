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
# Needs GKA (the gka binary) and node.

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
