#!/usr/bin/env bash
# timed.sh STAGE CMD...: runs CMD, then prints "stage STAGE: N s" so CI logs show each budget.
stage=$1; shift
start=$(date +%s)
"$@"; rc=$?
echo "== stage ${stage}: $(( $(date +%s) - start )) s (rc=${rc})"
exit $rc
