#!/usr/bin/env bash
# The model card's query, verbatim: its curl command (host and port as the card has them)
# against `gka local --served-model-name amazon/GKA-primed-HQwen3-32B-Instruct --http-port 8000`
# returns a chat completion. The README section "Query with curl / the OpenAI client" must
# show that same command, and its `js` example (the official openai client, streaming) is run
# too, so the README's examples are the ones tested. When port 8000 is taken on this machine
# the cluster gets a free port, this says so, and the command runs with that port substituted.
BIN=$1
source "$(dirname "$0")/lib.sh"
MODEL=amazon/GKA-primed-HQwen3-32B-Instruct

# The model card's command, character for character.
CARD=$(cat <<'EOF'
curl http://localhost:8000/v1/chat/completions -H "Content-Type: application/json" -d '{
  "model": "amazon/GKA-primed-HQwen3-32B-Instruct",
  "messages": [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "What is Linear Attention in the context of LLMs?"}]}'
EOF
)

# readme_block LANG N: the Nth fenced LANG block of the README section.
readme_block() {
  node -e 'const [lang, n] = process.argv.slice(1);
    const readme = require("fs").readFileSync("README.md", "utf8");
    const start = readme.indexOf("\n## Query with curl / the OpenAI client\n");
    if (start < 0) { console.error("README has no section Query with curl / the OpenAI client");
                     process.exit(1); }
    const end = readme.indexOf("\n## ", start + 1);
    const section = readme.slice(start, end < 0 ? undefined : end);
    const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].filter((m) => m[1] === lang);
    if (!blocks[n]) { console.error(`no ${lang} block ${n} in the section`); process.exit(1); }
    process.stdout.write(blocks[n][2]);' "$1" "$2"
}
readme_curl=$(readme_block bash 1)
[[ $readme_curl == "$CARD" ]] || fail "the README's curl command is not the card's:
$readme_curl"

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=8000
if port_taken 8000; then
  echo "NOTE: port 8000 is taken on this machine; the cluster serves HTTP on a free port and the"
  echo "      card's command runs with that port instead of 8000"
  PORT=0
fi
start_cluster --served-model-name "$MODEL" --http-port "$PORT"
ACTUAL=${HTTP##*:}
command=$CARD
[[ $ACTUAL == 8000 ]] || command=${CARD//localhost:8000/localhost:$ACTUAL}
echo "-- the card's command (port $ACTUAL)"
echo "$command"
bash -c "$command" >"$TMP/card.json" 2>"$TMP/card.err" || fail "curl failed: $(cat "$TMP/card.err")"
node -e 'const [f, model] = process.argv.slice(1);
  const r = JSON.parse(require("fs").readFileSync(f, "utf8"));
  const c = r.choices && r.choices[0];
  const problems = [];
  if (r.object !== "chat.completion") problems.push("object " + r.object);
  if (r.model !== model) problems.push("model " + r.model);
  if (!/^chatcmpl-/.test(r.id)) problems.push("id " + r.id);
  if (!c || c.message.role !== "assistant" || typeof c.message.content !== "string" ||
      c.message.content.length === 0) problems.push("no assistant message");
  if (!c || !["stop", "length"].includes(c.finish_reason)) problems.push("finish_reason");
  const u = r.usage || {};
  if (!(u.prompt_tokens > 20 && u.completion_tokens > 0 &&
        u.total_tokens === u.prompt_tokens + u.completion_tokens)) problems.push("usage");
  if (problems.length) { console.error("not a chat completion (" + problems.join(", ") + "): " +
                                       JSON.stringify(r).slice(0, 500)); process.exit(1); }
  console.log(`   chat.completion ${r.id}: ${u.completion_tokens} tokens, ` +
              `finish_reason ${c.finish_reason}`);' "$TMP/card.json" "$MODEL" ||
  fail "the card's command did not return a chat completion"

echo "-- the README's openai client example"
mkdir -p "$TMP/js"
readme_block js 0 >"$TMP/js/example.mjs"
ln -s "$REPO/third_party/npm/node_modules" "$TMP/js/node_modules"
[[ -d $REPO/third_party/npm/node_modules/openai ]] || fail "no openai npm package: run scripts/deps.sh"
(cd "$TMP/js" && OPENAI_BASE_URL="http://localhost:$ACTUAL/v1" node example.mjs) >"$TMP/js.out" \
  2>"$TMP/js.err" || fail "the README's js example failed: $(cat "$TMP/js.err")"
[[ $(wc -c <"$TMP/js.out") -gt 1 ]] || fail "the README's js example printed nothing"
echo "   streamed $(wc -c <"$TMP/js.out") bytes"
echo "openai_card_curl_test: ok"
