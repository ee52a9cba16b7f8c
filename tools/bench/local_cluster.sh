# Sourced by the load scripts (tools/bench/local_sweep.sh, tests/load/*.sh): a `gka local`
# cluster on 127.0.0.1 for the life of the calling script.
#
#   source tools/bench/local_cluster.sh
#   bench_workdir OUT_DIR                   (sets TMP; stops the cluster and removes TMP at exit)
#   make_tiny_model_and_tiers BIN_DIR WORK_DIR [tiny|rank32b]   (WORK_DIR/m, WORK_DIR/tiers.json)
#   start_local_cluster BIN_DIR MODEL_DIR TIERS_JSON PREFILL DECODE WORK_DIR
#   ... "$GKA" bench serve --addr "$ADDR" ...
#   cluster_address ROLE WORK_DIR          (a prefill or decode worker's gRPC address)
#   start_worker_pair BIN_DIR MODEL_KIND    (in TMP: 1 prefill + 1 decode worker behind the
#                                           router; sets PREFILL, DECODE and VOCAB too)
#   stop_local_cluster                      (call it from the caller's EXIT trap)
#
# Sets ADDR (the router's gRPC address), METRICS (the router's /metrics address), LOCAL_PID and
# WORKER_TLS (an array: the --tls-* flags of the certificate gka local made for clients of the
# workers' mutual-TLS ports, e.g. `gka bench direct ... "${WORKER_TLS[@]}"`).
# Logs go to WORK_DIR/*.log and are printed when the cluster fails to come up. LOCAL_ARGS (an
# array) adds `gka local` flags, e.g. LOCAL_ARGS=(--router-args "--admission=false").

# A small model and two tiers that differ in GKA iterations: interactive (prefill/decode
# num_iter 30/30, priority 10) and standard (10/10, priority 5, the default). tiny is
# make-tiny-model's default (hidden 128, vocabulary 151936, with the tokenizer); rank32b is one
# TP=8 rank of the 32B shape (8 query/GKA heads, 1 KV head, head_dim 128, so ~1 MiB of GKA
# state per layer and sequence) with hidden 256 and a 4096-token vocabulary, no tokenizer.
make_tiny_model_and_tiers() {
  local bin=$1 dir=$2 kind=${3:-tiny}
  if [[ $kind == rank32b ]]; then
    "$bin/gka" make-tiny-model --out "$dir/m" --no-tokenizer --pattern '*-GKA-*-GKA' --heads 8 \
      --kv-heads 1 --head-dim 128 --hidden 256 --intermediate 512 --vocab 4096 2>/dev/null
  else
    "$bin/gka" make-tiny-model --out "$dir/m" 2>/dev/null
  fi
  cat >"$dir/tiers.json" <<'JSON'
{"default": "standard",
 "tiers": [{"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10},
           {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5}]}
JSON
}

# For the load scripts: creates OUT_DIR and a scratch directory TMP, removed (after stopping
# the cluster) when the calling script exits.
bench_workdir() {  # OUT_DIR
  mkdir -p "$1"
  TMP=$(mktemp -d)
  trap 'stop_local_cluster; rm -rf "$TMP"' EXIT
}

# The gRPC address of the first process of ROLE (router, prefill, decode) in WORK_DIR/state.
cluster_address() {  # ROLE WORK_DIR
  node -e 'for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
             if (!l) continue; const o = JSON.parse(l);
             if (o.role === process.argv[2]) { console.log(o.grpc); break; } }' "$2/state" "$1"
}

# For the router-vs-direct scripts: the model, one prefill and one decode worker, their
# addresses, and the vocabulary `gka bench direct` draws prompt ids from.
start_worker_pair() {  # BIN_DIR MODEL_KIND (tiny | rank32b)
  make_tiny_model_and_tiers "$1" "$TMP" "$2"
  VOCAB=$([[ $2 == rank32b ]] && echo 4096 || echo 151936)
  start_local_cluster "$1" "$TMP/m" "$TMP/tiers.json" 1 1 "$TMP"
  PREFILL=$(cluster_address prefill "$TMP")
  DECODE=$(cluster_address decode "$TMP")
}

stop_local_cluster() {
  if [[ -n ${LOCAL_PID:-} ]]; then
    kill -TERM "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
    LOCAL_PID=
  fi
  return 0
}

start_local_cluster() {
  local bin=$1 model=$2 tiers=$3 prefill=$4 decode=$5 dir=$6
  WORKER_TLS=(--tls-ca "$dir/tls/ca.pem" --tls-cert "$dir/tls/client.pem" --tls-key "$dir/tls/client.key")
  "$bin/gka" local --model "$model" --port 0 --metrics-port 0 --prefill-workers "$prefill" \
    --decode-workers "$decode" --tiers "$tiers" --state-file "$dir/state" --log-dir "$dir" \
    ${LOCAL_ARGS[@]+"${LOCAL_ARGS[@]}"} >"$dir/local.out" &
  LOCAL_PID=$!
  local want=$((1 + prefill + decode))
  for _ in $(seq 1 600); do
    [[ -s $dir/state ]] && [[ $(wc -l <"$dir/state") -ge $want ]] && break
    kill -0 "$LOCAL_PID" 2>/dev/null || { cat "$dir"/*.log >&2; echo "gka local died" >&2; return 1; }
    sleep 0.1
  done
  ADDR=$(head -1 "$dir/state" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).grpc))')
  METRICS=$(head -1 "$dir/state" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).metrics))')
  "$bin/gka" health --addr "$ADDR" --timeout 30 >/dev/null
}
