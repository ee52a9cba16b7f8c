#!/usr/bin/env bash
# Trust: mutual TLS between the router, the workers and clients, and API keys stored hashed.
#   A throwaway CA (openssl) issues certificates for the router, the workers and a client; a
#   second, unrelated CA issues an intruder's. The cluster runs with --tls-* everywhere, the
#   router with --public-tls (its public port wants client certificates too) and
#   --api-keys-file (salted SHA-256 lines from `gka hash-api-key`). (The default `gka local`
#   cluster, with its own throwaway CA: tls_default_test.sh.)
# Asserts: the workers register with the router over mTLS and a request is served end to end
# (router -> workers -> client over TLS); a plaintext client, a client without a certificate
# and a client with the intruder's certificate are refused at the handshake (UNAVAILABLE); a
# client with a good certificate but no key or a wrong key gets UNAUTHENTICATED; the key file
# does not contain the key; a plaintext (--insecure) worker cannot register on the internal
# port (the router counts only the two certified workers).
#   trust_test.sh BIN_DIR
set -uo pipefail
BIN=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/cluster.sh"
cluster_test_setup "$BIN"

# The PKI: EC P-256, one day.
P=$TMP/pki
mkdir -p "$P"
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$1" \
  -keyout "$P/$1.key" -out "$P/$1.pem" 2>/dev/null; }
issue() {  # ca name
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$P/$2.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$P/$2.key" -out "$P/$2.csr" 2>/dev/null &&
    openssl x509 -req -in "$P/$2.csr" -CA "$P/$1.pem" -CAkey "$P/$1.key" -CAcreateserial -days 1 \
      -out "$P/$2.pem" -extfile "$P/$2.ext" 2>/dev/null
}
ca cluster-ca && ca rogue-ca && issue cluster-ca router && issue cluster-ca worker &&
  issue cluster-ca client && issue rogue-ca intruder || fail "openssl could not make the PKI"
tls() { echo "--tls-ca $P/cluster-ca.pem --tls-cert $P/$1.pem --tls-key $P/$1.key"; }

KEY=$("$GKA" hash-api-key --name ci 2>&1 >"$TMP/keys" | tail -1)
[[ $KEY == gka-* ]] || fail "gka hash-api-key printed no key"
grep -q "$KEY" "$TMP/keys" && fail "the key file holds the key itself"
grep -qE '^ci sha256:[0-9a-f]{32}:[0-9a-f]{64}$' "$TMP/keys" || fail "unexpected key line: $(cat "$TMP/keys")"

start_cluster "$TMP" --port 0 --router-args "$(tls router) --public-tls --api-keys-file $TMP/keys" \
  --prefill-args "$(tls worker)" --decode-args "$(tls worker)" || fail "no cluster"
ADDR=$(field router 0 grpc)
wait_healthy prefill 2 && wait_healthy decode 2 || fail "workers did not register over mTLS"
echo "   4 workers registered with the router over mutual TLS"

# A worker without a certificate cannot join.
plaintext_worker_refused 2

SERVING=gka.serving.v1
encode() { protoc --encode="$SERVING.$1" -I proto proto/gka/serving/v1/serving.proto; }
echo "" | encode GetModelInfoRequest >"$TMP/info.pb"
echo 'token_ids { ids: [3, 14, 15, 92, 65] } sampling { temperature: 0 max_tokens: 6 ignore_eos: true }' |
  encode GenerateRequest >"$TMP/gen.pb"
call() {  # expected-code method request client-flags...: to the router's public port
  local want=$1; shift
  tls_call "$want" "$ADDR" "$@"
}
INFO=(/$SERVING.GenerateService/GetModelInfo "$TMP/info.pb")
GOOD=(--ca "$P/cluster-ca.pem" --cert "$P/client.pem" --key "$P/client.key")
call UNAVAILABLE "${INFO[@]}" --api-key "$KEY"
call UNAVAILABLE "${INFO[@]}" --ca "$P/cluster-ca.pem" --api-key "$KEY"
call UNAVAILABLE "${INFO[@]}" --ca "$P/cluster-ca.pem" --cert "$P/intruder.pem" --key "$P/intruder.key" --api-key "$KEY"
echo "   refused at the handshake: plaintext, no client certificate, the intruder's certificate"
call UNAUTHENTICATED "${INFO[@]}" "${GOOD[@]}"
call UNAUTHENTICATED "${INFO[@]}" "${GOOD[@]}" --api-key "${KEY}x"
call UNAUTHENTICATED "${INFO[@]}" "${GOOD[@]}" --api-key "$(cut -d' ' -f2 "$TMP/keys")"
echo "   UNAUTHENTICATED with a good certificate: no key, a wrong key, the stored digest as key"
call OK "${INFO[@]}" "${GOOD[@]}" --api-key "$KEY"
call OK /$SERVING.GenerateService/Generate "$TMP/gen.pb" "${GOOD[@]}" --api-key "$KEY" --stream --out "$TMP/last.pb"
protoc --decode="$SERVING.GenerateResponse" -I proto proto/gka/serving/v1/serving.proto <"$TMP/last.pb" >"$TMP/last.txt"
grep -q "completion_tokens: 6" "$TMP/last.txt" || fail "the generation over mTLS did not finish: $(cat "$TMP/last.txt")"
echo "   certificate + key: model info and a 6-token generation through router and workers over mTLS"
grep -q "$KEY" "$TMP"/*.log && fail "a log contains the API key"
echo "trust_test: ok"
