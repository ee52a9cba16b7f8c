# Shared by the cluster tests (source it after `set -euo pipefail` with GKA set):
#   cluster_tmp                 TMP: a temp dir; on exit the cluster (LOCAL_PID) stops and
#                               TMP is removed
#   wait_cluster N              waits until gka local's state file ($TMP/state) lists N
#                               processes (dumps the logs and exits 1 if gka local died), sets
#                               ADDR to the router's gRPC address and waits for its health
# `gka local ... --state-file "$TMP/state" --log-dir "$TMP" &` then `LOCAL_PID=$!` in between.
cluster_tmp() {
  TMP=$(mktemp -d)
  trap 'cluster_cleanup' EXIT
}
cluster_cleanup() {
  [[ -n ${LOCAL_PID:-} ]] && kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
  rm -rf "$TMP"
}
wait_cluster() {
  local n=$1 _
  for _ in $(seq 1 600); do
    [[ -s $TMP/state ]] && [[ $(wc -l <"$TMP/state") -ge $n ]] && break
    kill -0 "$LOCAL_PID" 2>/dev/null || { cat "$TMP"/*.log >&2; echo "gka local died"; exit 1; }
    sleep 0.2
  done
  ADDR=$(head -1 "$TMP/state" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).grpc))')
  "$GKA" health --addr "$ADDR" --timeout 30 >/dev/null
}
