#!/usr/bin/env bash
# Mutual TLS is the default: a plain `gka local` cluster (router + 1 prefill + 1 decode worker on
# 127.0.0.1, no TLS flags) makes a throwaway CA and certificates in <log-dir>/tls and runs every
# internal port over mutual TLS.
# Asserts: the CA's key is not written and the private keys are mode 0600; a plaintext client,
# and a client whose certificate comes from another CA (`gka make-certs`), are refused by a
# worker's port and by the router's internal port, while gka local's client certificate is
# served; a plaintext (--insecure) worker cannot register; the public port needs no key and no
# certificate on loopback, and its greedy outputs equal the offline engine's token for token;
# a router or worker started with neither certificates nor --insecure exits 2 with a message
# naming both ways out; no private key (nor any line of one) appears in any log.
#   tls_default_test.sh BIN_DIR
set -uo pipefail
BIN=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/cluster.sh"
cluster_test_setup "$BIN"

# No TLS flags at all: gka local's defaults.
PREFILL_WORKERS=1 DECODE_WORKERS=1 start_cluster "$TMP" --port 0 >"$TMP/start.out" 2>&1 ||
  fail "no cluster: $(cat "$TMP/start.out")"
# Neither certificates nor --insecure: a clear refusal, before any port is opened.
for b in gka-router gka-prefill-worker gka-decode-worker; do
  args=(--port 0 --metrics-port -1)
  [[ $b != gka-router ]] && args+=(--model "$TMP/m")
  timeout 30 "$BIN/$b" "${args[@]}" >/dev/null 2>"$TMP/$b-refused.err"
  rc=$?
  [[ $rc == 2 ]] || fail "$b without TLS flags exited $rc, want 2: $(cat "$TMP/$b-refused.err")"
  grep -q -- "--tls-ca" "$TMP/$b-refused.err" && grep -q -- "--insecure" "$TMP/$b-refused.err" ||
    fail "$b's refusal does not name both ways out: $(cat "$TMP/$b-refused.err")"
done
echo "   router and workers without certificates or --insecure: exit 2, naming --tls-* and --insecure"

wait_router 60
T=$TMP/tls
[[ $(field router 0 tls_dir) == "$T" ]] || fail "the router's state line names no tls_dir $T"
grep -q "$T" "$TMP/start.out" || fail "gka local did not say where the certificates are"
ls "$T" | sort | tr '\n' ' ' | grep -qx "ca.pem client.key client.pem decode-0.key decode-0.pem prefill-0.key prefill-0.pem router.key router.pem " ||
  fail "unexpected files in $T: $(ls "$T")"
for k in "$T"/*.key; do
  [[ $(stat -c %a "$k") == 600 ]] || fail "$k has mode $(stat -c %a "$k")"
done
echo "   gka local made a CA and 4 certificates in <log-dir>/tls (no CA key; keys 0600)"

# Raw calls: grpc.health.v1 on each internal port.
echo -n "" >"$TMP/empty.pb"
"$GKA" make-certs --out "$TMP/rogue" --names intruder >/dev/null || fail "gka make-certs failed"
call() {  # expected-code addr client-flags...: grpc.health.v1 Check
  local want=$1 addr=$2; shift 2
  tls_call "$want" "$addr" /grpc.health.v1.Health/Check "$TMP/empty.pb" "$@"
}
OURS=(--ca "$T/ca.pem" --cert "$T/client.pem" --key "$T/client.key")
THEIRS=(--ca "$T/ca.pem" --cert "$TMP/rogue/intruder.pem" --key "$TMP/rogue/intruder.key")
for addr in "$(field prefill 0 grpc)" "$(field decode 0 grpc)" "$(field router 0 internal)"; do
  call UNAVAILABLE "$addr"
  call UNAVAILABLE "$addr" "${THEIRS[@]}"
  call OK "$addr" "${OURS[@]}"
done
echo "   prefill, decode and registry ports: plaintext and another CA's certificate refused, ours served"

# A plaintext worker cannot join.
plaintext_worker_refused 1

# The public port: no key, no certificate; greedy output equals the offline engine's.
for ids in "3,14,15,92,65,35,89,79,32,38,46" "2,71,82,81,82,84,59,4,52,35,36,2,87,47,13,52,66"; do
  want=$(offline_token_ids "$ids" 12 --temperature 0)
  got=$("$GKA" generate --addr "$ADDR" --prompt-ids "$ids" --max-tokens 12 --temperature 0 \
    --ignore-eos --json 2>"$TMP/generate.err" | token_ids -)
  [[ -n $want && $got == "$want" ]] || fail "prompt $ids: cluster $got, offline $want ($(cat "$TMP/generate.err"))"
done
echo "   2 greedy requests through the mTLS cluster equal the offline engine token for token"

kill -TERM "$ROGUE_PID" 2>/dev/null
kill -TERM "$LOCAL_PID" && wait "$LOCAL_PID"
LOCAL_PID=
# No private key in any log: neither the PEM header nor any base64 line of a key.
logs=("$TMP"/*.log "$TMP"/*.err "$TMP/local.out" "$TMP/start.out")
grep -l "PRIVATE KEY" "${logs[@]}" && fail "a log holds a private key"
for k in "$T"/*.key; do
  while read -r line; do
    [[ $line == -----* ]] && continue
    grep -qF -- "$line" "${logs[@]}" && fail "$k leaked into a log"
  done <"$k"
done
echo "   no private key in the logs"
echo "tls_default_test: ok"
