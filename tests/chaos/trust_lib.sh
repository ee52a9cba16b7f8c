# Sourced by the trust tests (trust_test.sh, tls_default_test.sh) after `set -uo pipefail`:
#   source "$(dirname "$0")/trust_lib.sh" NAME BIN_DIR
# Sets BIN, HERE, GKA, PY and TMP (removed at exit unless KEEP_TMP is set), UCX over tcp; at
# exit stops ROGUE_PID and LOCAL_PID if set. `fail MESSAGE` prints it with the logs' tails and
# exits 1.
TEST_NAME=$1
BIN=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export UCX_TLS=tcp
GKA=$BIN/gka
PY=/usr/bin/python3
TMP=$(mktemp -d)
cleanup() {
  [[ -n ${ROGUE_PID:-} ]] && kill -TERM "$ROGUE_PID" 2>/dev/null
  [[ -n ${LOCAL_PID:-} ]] && kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
  if [[ -n ${KEEP_TMP:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
fail() { echo "$TEST_NAME: $*"; tail -3 "$TMP"/*.log 2>/dev/null; exit 1; }
