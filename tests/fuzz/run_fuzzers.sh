#!/usr/bin/env bash
# Replays each target's corpus (regressions), then fuzzes it for SECONDS (default 30).
#   tests/fuzz/run_fuzzers.sh build-fuzz [seconds]
set -euo pipefail
B=$1 SECONDS_EACH=${2:-30}
cd "$(dirname "$0")/../.."
for t in $(ls "$B/fuzz" | sed -n "s/_fuzz$//p"); do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$t/* "$work"/ 2>/dev/null || true
  echo "== $t: $(ls "$work" | wc -l) seeds, ${SECONDS_EACH}s"
  "$B/fuzz/${t}_fuzz" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=4096 \
    -artifact_prefix="tests/fuzz/corpus/$t/crash-" "$work" 2>&1 | grep -E "Done [0-9]+ runs|ERROR|SUMMARY" || true
  rm -rf "$work"
done
ls tests/fuzz/corpus/*/crash-* 2>/dev/null && { echo "crashes found (kept as regressions)"; exit 1; }
echo "no crashes"
