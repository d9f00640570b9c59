#!/usr/bin/env bash
# Runs the whole test suite against a fresh local broker and closes with one summary line
# ("tests: N passed, M failed") over every test binary.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Every test binary runs, even after one fails, so a run shows every failure at once.
"$here/with-broker.sh" "${CARGO:-cargo}" test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
