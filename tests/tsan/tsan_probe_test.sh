#!/usr/bin/env bash
# tsan_probe_test.sh PROBE UNANNOTATED: the TSan stage's self-check (ctest `tsan_probe`).
#  - PROBE (linked with gka::tsan): the absl::Mutex / CondVar / Notification hand-offs report
#    no race, and the deliberately racy mode IS reported (with RacyIncrement in its stack): a
#    TSan stage that cannot see a real race in our code fails here.
#  - UNANNOTATED (the same probe without gka::tsan): the absl::Mutex counter is reported, which
#    shows the annotations are what makes the absl modes clean. Should Debian ever ship an
#    instrumented Abseil this fails, and the annotation library can go.
# TSAN_OPTIONS from the caller (suppressions) apply, so the stage's suppressions are proven not
# to hide the race either.
set -uo pipefail
probe=$1 unannotated=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail=0
run() {  # run BINARY MODE -> sets rc, races
  "$1" "$2" >"$out" 2>&1
  rc=$?
  races=$(grep -c 'WARNING: ThreadSanitizer' "$out")
}
for mode in mutex condvar notification; do
  run "$probe" "$mode"
  if [[ $rc -ne 0 || $races -ne 0 ]]; then
    echo "FAIL: $mode: rc=$rc, $races TSan reports (want 0, 0):"; cat "$out"; fail=1
  else
    echo "ok: $mode: no report"
  fi
done
run "$probe" racy
if [[ $races -ge 1 ]] && grep -q 'WARNING: ThreadSanitizer: data race' "$out" &&
   grep -q 'RacyIncrement' "$out" && [[ $rc -ne 0 ]]; then
  echo "ok: racy: the data race is reported (rc=$rc)"
else
  echo "FAIL: racy: rc=$rc, $races reports; TSan must report the race in RacyIncrement:"
  cat "$out"; fail=1
fi
run "$unannotated" mutex
if [[ $races -ge 1 ]]; then
  echo "ok: unannotated mutex: $races false report(s) without gka::tsan, as expected"
else
  echo "FAIL: without gka::tsan the absl::Mutex counter reported nothing: is Abseil" \
       "instrumented now? Then drop tests/tsan/absl_annotations.cc"; cat "$out"; fail=1
fi
exit $fail
