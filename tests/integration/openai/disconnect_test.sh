#!/usr/bin/env bash
# HTTP clients that hang up abort their requests: the decode worker's gka_kv_pages_used and
# gka_state_slots_used go back to 0 within seconds, for clients that leave mid-stream (SSE)
# and for clients of non-streaming requests that leave while the completion is generated.
# Checked non-vacuously: the gauges must be above 0 while the requests run.
BIN=$1
source "$(dirname "$0")/lib.sh"
start_cluster --http-port 0

LONG='"max_tokens": 3000, "ignore_eos": true'
# hang_up TAG BODY... : starts one curl per body, waits until the decode worker holds pages and
# (for streams) bytes have arrived, kills the clients, and waits for the gauges to reach 0.
hang_up() {
  local tag=$1 streaming=$2
  shift 2
  local pids=() i=0
  for body in "$@"; do
    i=$((i + 1))
    local endpoint=/v1/completions
    [[ $body == *messages* ]] && endpoint=/v1/chat/completions
    curl -s -N "http://$HTTP$endpoint" -d "$body" >"$TMP/$tag.$i.out" &
    pids+=($!)
  done
  local busy=0
  for _ in $(seq 1 100); do
    busy=$(pages_used)
    if [[ $busy -gt 0 ]]; then
      # Streams: wait for the first events, so the clients really leave mid-stream.
      [[ $streaming == no ]] && break
      local started=1
      for j in $(seq 1 "$i"); do grep -q '^data: ' "$TMP/$tag.$j.out" || started=0; done
      [[ $started == 1 ]] && break
    fi
    sleep 0.1
  done
  [[ $busy -gt 0 ]] || fail "$tag: no pages in use while $i requests run: the check would be vacuous"
  sleep 0.5
  busy=$(pages_used)
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  local left
  for _ in $(seq 1 50); do
    left=$(pages_used)
    [[ $left == 0 ]] && break
    sleep 0.1
  done
  [[ $left == 0 ]] || fail "$tag: $left pages/slots still held 5 s after the clients left (were $busy)"
  if [[ $streaming == yes ]]; then
    grep -q '\[DONE\]' "$TMP/$tag.1.out" && fail "$tag: the stream finished before the hang-up"
  fi
  echo "   $tag: pages+slots $busy while generating, 0 after the clients hung up"
}

echo "-- clients leaving mid-stream"
hang_up stream yes \
  "{\"prompt\": \"one\", \"stream\": true, $LONG}" \
  "{\"messages\": [{\"role\": \"user\", \"content\": \"two\"}], \"stream\": true, $LONG}" \
  "{\"messages\": [{\"role\": \"user\", \"content\": \"three\"}], \"stream\": true, \"n\": 2, $LONG}"

echo "-- clients leaving a non-streaming request"
hang_up plain no \
  "{\"prompt\": \"four\", $LONG}" \
  "{\"messages\": [{\"role\": \"user\", \"content\": \"five\"}], $LONG}"

echo "-- the router still serves"
code=$(curl -s -o "$TMP/ok" -w '%{http_code}' "http://$HTTP/v1/chat/completions" \
  -d '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": true}')
[[ $code == 200 ]] && grep -q '^data: \[DONE\]' "$TMP/ok" || fail "after the hang-ups: HTTP $code"
sleep 0.5
[[ $(pages_used) == 0 ]] || fail "a finished request left pages behind"
echo "openai_disconnect_test: ok"
