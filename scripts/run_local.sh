#!/usr/bin/env bash
# The main job (make run): makes the embedded tiny model if needed, then answers one chat
# request. Once the cluster binaries are built, the request goes router → prefill worker →
# UCX → decode worker through `gka local`; otherwise through the offline engine.
set -euo pipefail
BUILD=${1:-build}
MODEL=${GKA_MODEL:-$BUILD/tiny-model}
GKA=$BUILD/bin/gka
[[ -f $MODEL/config.json ]] || "$GKA" make-tiny-model --out "$MODEL"
MESSAGE=${GKA_MESSAGE:-"What is linear attention in the context of LLMs?"}

if [[ -x $BUILD/bin/gka-router && -x $BUILD/bin/gka-decode-worker && -x $BUILD/bin/gka-prefill-worker ]] &&
   "$GKA" local --help >/dev/null 2>&1; then
  exec ./scripts/run_cluster_demo.sh "$BUILD" "$MODEL" "$MESSAGE"
fi
echo "== offline engine (cluster binaries not built): gka chat --model $MODEL" >&2
"$GKA" chat --model "$MODEL" --max-tokens 48 --temperature 0 "$MESSAGE"
