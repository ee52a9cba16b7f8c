# Sourced by the OpenAI-compatible HTTP tests: one `gka local` cluster (router + 1 prefill +
# 1 decode worker, the tiny model) on 127.0.0.1, stopped and removed when the test exits.
#
#   BIN=$1; source "$(dirname "$0")/lib.sh"
#   start_cluster --http-port 0          # extra `gka local` flags
#   curl "http://$HTTP/v1/models"; pages_used
set -euo pipefail
GKA=$BIN/gka
REPO=$(pwd)
TMP=$(mktemp -d)
LOCAL_PID=

cleanup() {
  if [[ -n $LOCAL_PID ]]; then
    kill -TERM "$LOCAL_PID" 2>/dev/null || true
    wait "$LOCAL_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for log in "$TMP"/*.log "$TMP"/local.err; do
    [[ -f $log ]] && { echo "--- $log" >&2; tail -20 "$log" >&2; }
  done
  exit 1
}

# A key of one process's JSON line in the state file: field ROLE KEY.
field() {
  node -e 'const [r, k, f] = process.argv.slice(1);
    for (const l of require("fs").readFileSync(f, "utf8").split("\n")) {
      if (l && JSON.parse(l).role === r) { console.log(JSON.parse(l)[k]); break; } }' \
    "$1" "$2" "$TMP/state"
}

start_cluster() {
  "$GKA" make-tiny-model --out "$TMP/m" 2>/dev/null
  "$GKA" local --model "$TMP/m" --port 0 --metrics-port 0 --state-file "$TMP/state" \
    --log-dir "$TMP" "$@" >"$TMP/local.out" 2>"$TMP/local.err" &
  LOCAL_PID=$!
  for _ in $(seq 1 600); do
    [[ -s $TMP/state && $(wc -l <"$TMP/state") -ge 3 ]] && break
    kill -0 "$LOCAL_PID" 2>/dev/null || fail "gka local exited before the cluster was up"
    sleep 0.2
  done
  [[ -s $TMP/state ]] || fail "the cluster did not start within 120 s"
  HTTP=$(field router http)
  ROUTER_PID=$(field router pid)
  DECODE_METRICS=$(field decode metrics)
  [[ -n $HTTP ]] || fail "the router reports no HTTP address"
  for _ in $(seq 1 150); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP/health") == 200 ]] && return 0
    sleep 0.2
  done
  fail "/health did not turn 200 within 30 s"
}

# KV pages + state slots the decode worker holds now.
pages_used() {
  curl -s "http://$DECODE_METRICS/metrics" |
    grep -E '^gka_(kv_pages|state_slots)_used' | awk '{s += $2} END {print s + 0}'
}

# Fails unless FILE holds OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}.
# With PARAM, error.param must equal it.
check_error_json() {  # file [param]
  node -e 'const [f, param] = process.argv.slice(1);
    const e = JSON.parse(require("fs").readFileSync(f, "utf8")).error;
    const ok = e && typeof e.message === "string" && e.message.length > 0 &&
      typeof e.type === "string" && "param" in e && "code" in e &&
      (!param || e.param === param);
    if (!ok) { console.error("not an OpenAI error (param " + param + "): " +
                             JSON.stringify(e)); process.exit(1); }' "$1" "${2:-}"
}
