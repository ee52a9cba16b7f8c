# Shared by the cluster tests (source it after `set -euo pipefail` with GKA set):
#   cluster_tmp                 TMP: a temp dir; on exit the cluster (LOCAL_PID) stops and
#                               TMP is removed
#   wait_cluster N              waits until gka local's state file ($TMP/state) lists N
#                               processes (dumps the logs and exits 1 if gka local died), sets
#                               ADDR to the router's gRPC address and waits for its health
#   write_tiers FILE            the two-tier file of the greedy tests (interactive 30/30,
#                               batch 10/1, standard 10/10 the default) for TIERS below
#   send_requests N [PAUSE_AT]  sends requests 0..N-1 at once to ADDR ($TMP/cluster.I.json),
#                               sleeping 0.5 s after request PAUSE_AT; exits 1 if one fails
#   compare_offline N WHAT [JS] runs each request with `gka generate --model $TMP/m` at its
#                               tier's num_iter ($TMP/offline.I.json); fails unless both give
#                               the same MAX_TOKENS token ids and JS (node; a = cluster answer,
#                               b = offline answer, pn = prefill num_iter) exits 0
# `gka local ... --state-file "$TMP/state" --log-dir "$TMP" &` then `LOCAL_PID=$!` in between.
# The test defines prompt_args I (sets PROMPT=(flag value)) and TIERS: request I runs in tier
# ${TIERS[I % n]}, each entry NAME:PREFILL_NUM_ITER:DECODE_NUM_ITER as in the tier file.
MAX_TOKENS=12
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
write_tiers() {
  cat >"$1" <<'JSON'
{"default": "standard",
 "tiers": [{"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5},
           {"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10},
           {"name": "batch", "prefill_num_iter": 10, "decode_num_iter": 1, "priority": 1}]}
JSON
}
request_tier() {  # i -> TIER, PN, DN from TIERS
  IFS=: read -r TIER PN DN <<<"${TIERS[$(( $1 % ${#TIERS[@]} ))]}"
}
send_requests() {
  local n=$1 pause_at=${2:--1} i p pids=()
  for i in $(seq 0 $((n - 1))); do
    request_tier "$i"
    prompt_args "$i"
    "$GKA" generate --addr "$ADDR" --tier "$TIER" "${PROMPT[@]}" --max-tokens $MAX_TOKENS \
      --temperature 0 --ignore-eos --json >"$TMP/cluster.$i.json" 2>"$TMP/cluster.$i.err" &
    pids+=($!)
    if [[ $i -eq $pause_at ]]; then sleep 0.5; fi
  done
  for p in "${pids[@]}"; do
    if ! wait "$p"; then
      cat "$TMP"/cluster.*.err "$TMP"/*.log >&2
      echo "a cluster request failed"
      exit 1
    fi
  done
}
compare_offline() {
  local n=$1 what=$2 check=${3:-} i fail=0
  for i in $(seq 0 $((n - 1))); do
    request_tier "$i"
    prompt_args "$i"
    "$GKA" generate --model "$TMP/m" "${PROMPT[@]}" --max-tokens $MAX_TOKENS --temperature 0 \
      --ignore-eos --prefill-num-iter "$PN" --decode-num-iter "$DN" --json \
      >"$TMP/offline.$i.json" 2>/dev/null
    if ! node -e 'const a=require(process.argv[1]),b=require(process.argv[2]),pn=+process.argv[3];
        if (a.token_ids.length!==+process.argv[4] ||
            JSON.stringify(a.token_ids)!==JSON.stringify(b.token_ids)) {
          console.log("cluster", a.token_ids, "\noffline", b.token_ids); process.exit(1)
        }
        '"$check" "$TMP/cluster.$i.json" "$TMP/offline.$i.json" "$PN" $MAX_TOKENS; then
      echo "request $i (tier $TIER, prefill/decode num_iter $PN/$DN): $what != offline"; fail=1
    fi
  done
  [[ $fail -eq 0 ]] || exit 1
}
