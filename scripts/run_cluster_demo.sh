#!/usr/bin/env bash
# The main job through the cluster: gka local (router + prefill worker + decode worker as
# processes on 127.0.0.1, KV pages and GKA states over UCX), one chat request through the
# router, then how to use it. Router and workers talk mutual TLS with certificates gka local
# makes; the router's public port on 127.0.0.1 is plaintext and needs no key. GKA_KEEP_RUNNING=1 leaves the cluster up until Ctrl-C.
set -euo pipefail
BUILD=$1 MODEL=$2 MESSAGE=$3
GKA=$BUILD/bin/gka
PORT=${GKA_PORT:-50051} METRICS=${GKA_METRICS_PORT:-9400}
RUN=$(mktemp -d)
"$GKA" local --model "$MODEL" --port "$PORT" --metrics-port "$METRICS" \
  --state-file "$RUN/state" --log-dir "$RUN" >"$RUN/processes.jsonl" &
LOCAL=$!
trap 'kill -TERM $LOCAL 2>/dev/null; wait $LOCAL 2>/dev/null; rm -rf "$RUN"' EXIT
for _ in $(seq 1 300); do
  [[ -s $RUN/state && $(wc -l <"$RUN/state") -ge 3 ]] && break
  kill -0 $LOCAL 2>/dev/null || { cat "$RUN"/*.log >&2; echo "gka local failed" >&2; exit 1; }
  sleep 0.2
done
"$GKA" health --addr "127.0.0.1:$PORT" --timeout 60 >/dev/null
echo "== cluster: $(wc -l <"$RUN/state") processes (router, prefill, decode); router 127.0.0.1:$PORT"
echo "== router <-> workers: mutual TLS, a throwaway CA and certificates in $RUN/tls (gka local made them)"
echo "== you: $MESSAGE"
echo -n "== model (tiny, random weights): "
"$GKA" chat --addr "127.0.0.1:$PORT" --max-tokens 48 --temperature 0 "$MESSAGE"
cat <<TXT
== send more:   $GKA chat --addr 127.0.0.1:$PORT "your message"
                $GKA generate --addr 127.0.0.1:$PORT --prompt "Hello" --tier interactive --json
== metrics:     curl -s 127.0.0.1:$METRICS/metrics   (router; workers on $((METRICS + 1)), $((METRICS + 2)))
== run it yourself: $GKA local --model $MODEL --port $PORT --metrics-port $METRICS
TXT
if [[ ${GKA_KEEP_RUNNING:-0} == 1 ]]; then
  echo "== serving until Ctrl-C"
  wait $LOCAL
fi
