#!/usr/bin/env bash
# Malformed HTTP bodies get 4xx OpenAI-style errors and the router keeps serving: bad JSON,
# wrong types, huge max_tokens, a 10 MB body (413, with and without Expect: 100-continue,
# and chunked), invalid UTF-8, deep nesting, unknown endpoints and models; API-key checks.
# After every group a real completion still succeeds and the router process is the same.
BIN=$1
source "$(dirname "$0")/lib.sh"
KEY=openai-malformed-test-key
GKA_API_KEY=$KEY start_cluster --http-port 0
AUTH=(-H "Authorization: Bearer $KEY")

# expect STATUS PARAM ENDPOINT curl-args...: the status, and OpenAI's error JSON naming PARAM
# ("" for none to check).
expect() {
  local status=$1 param=$2 endpoint=$3
  shift 3
  local code
  code=$(curl -s -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" "http://$HTTP$endpoint" "$@")
  [[ $code == "$status" ]] || fail "$endpoint $*: HTTP $code, want $status: $(head -c 300 "$TMP/body")"
  check_error_json "$TMP/body" "$param" || fail "$endpoint $*: bad error body"
}
chat() { expect "$1" "$2" /v1/chat/completions -H "Content-Type: application/json" "${@:3}"; }
still_serving() {
  kill -0 "$ROUTER_PID" 2>/dev/null || fail "the router died ($1)"
  local code
  code=$(curl -s -o "$TMP/ok" -w '%{http_code}' "${AUTH[@]}" "http://$HTTP/v1/completions" \
    -d '{"prompt": "still serving", "max_tokens": 2, "temperature": 0}')
  [[ $code == 200 ]] || fail "after $1: a valid request got HTTP $code: $(cat "$TMP/ok")"
  echo "   ok: $1; still serving"
}

echo "-- bad JSON"
chat 400 "" -d '{"messages": [{"role": "user", "content": "hi"'
chat 400 "" -d '[1, 2, 3]'
chat 400 "" -d ''
chat 400 "" -d 'null'
chat 400 "" -d '{"messages": [{"role": "user", "content": "hi"}],}'
still_serving "bad JSON"

echo "-- wrong types"
chat 400 messages -d '{"messages": "hi"}'
chat 400 temperature -d '{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}'
chat 400 max_tokens -d '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}'
chat 400 stop -d '{"messages": [{"role": "user", "content": "hi"}], "stop": 5}'
chat 400 n -d '{"messages": [{"role": "user", "content": "hi"}], "n": 100}'
chat 400 stream -d '{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}'
chat 400 "messages[0].content" -d '{"messages": [{"role": "user", "content": 7}]}'
chat 400 response_format \
  -d '{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}'
chat 400 top_p -d '{"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}'
expect 400 prompt /v1/completions -d '{"prompt": {"text": "hi"}}'
expect 400 "prompt[0]" /v1/completions -d '{"prompt": [999999999]}'
still_serving "wrong types"

echo "-- huge max_tokens"
chat 400 max_tokens -d '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}'
chat 400 max_tokens -d '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000000}'
chat 400 max_tokens \
  -d '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999999999999999999}'
chat 400 max_completion_tokens \
  -d '{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1e300}'
still_serving "huge max_tokens"

echo "-- 10 MB bodies"
node -e 'process.stdout.write(JSON.stringify({messages: [{role: "user", content: "a".repeat(10e6)}]}))' \
  >"$TMP/10mb.json"
chat 413 "" --data-binary @"$TMP/10mb.json"                       # curl sends Expect: 100-continue
chat 413 "" -H "Expect:" --data-binary @"$TMP/10mb.json"          # the whole body arrives first
chat 413 "" -H "Transfer-Encoding: chunked" --data-binary @"$TMP/10mb.json"  # no length given
# Under the limit, curl's Expect: 100-continue gets its interim answer (not a 1 s stall).
node -e 'process.stdout.write(JSON.stringify({prompt: "hi", max_tokens: 2, user: "u".repeat(2e6)}))' \
  >"$TMP/2mb.json"
code=$(curl -sv -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" "http://$HTTP/v1/completions" \
  --data-binary @"$TMP/2mb.json" 2>"$TMP/2mb.err")
[[ $code == 200 ]] || fail "a 2 MB body under the limit: HTTP $code: $(head -c 300 "$TMP/body")"
grep -q '< HTTP/1.1 100 Continue' "$TMP/2mb.err" || fail "no 100 Continue for Expect"
still_serving "10 MB bodies"

echo "-- invalid UTF-8"
printf '{"messages": [{"role": "user", "content": "bad \xff\xfe bytes"}]}' >"$TMP/utf8.json"
chat 400 "" --data-binary @"$TMP/utf8.json"
printf '{"messages": [{"role": "user", "content": "overlong \xc0\xaf"}]}' >"$TMP/utf8.json"
chat 400 "" --data-binary @"$TMP/utf8.json"
printf '{"prompt": "cut \xe2\x82"}' >"$TMP/utf8.json"
expect 400 "" /v1/completions --data-binary @"$TMP/utf8.json"
chat 400 "" -d '{"messages": [{"role": "user", "content": "lone surrogate \ud800"}]}'
still_serving "invalid UTF-8"

echo "-- deep nesting, unknown endpoints, methods and models"
node -e 'process.stdout.write("[".repeat(200000) + "]".repeat(200000))' >"$TMP/deep.json"
chat 400 "" --data-binary @"$TMP/deep.json"
expect 404 "" /v1/nothing-here -d '{}'
expect 405 "" /v1/chat/completions -X GET
expect 405 "" /v1/models -X POST -d '{}'
chat 404 model -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
expect 404 "" /v1/models/gpt-4o
still_serving "deep nesting and unknown names"

echo "-- API key"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' "http://$HTTP/v1/models")
[[ $code == 401 ]] || fail "no key: HTTP $code, want 401"
check_error_json "$TMP/body"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer wrong" \
  "http://$HTTP/v1/chat/completions" -d '{"messages": [{"role": "user", "content": "hi"}]}')
[[ $code == 401 ]] || fail "wrong key: HTTP $code, want 401"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP/health")
[[ $code == 200 ]] || fail "/health must not need the key: HTTP $code"
still_serving "API key checks"

echo "-- 40 malformed requests at once"
pids=()
for i in $(seq 1 40); do
  curl -s -o /dev/null "${AUTH[@]}" "http://$HTTP/v1/chat/completions" \
    -d "{\"messages\": [{\"role\": \"user\", \"content\": $i}], \"n\": \"$i\"" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
still_serving "a burst of malformed requests"
echo "openai_malformed_test: ok"
