#!/usr/bin/env bash
# Runs the whole test suite against a fresh local broker and closes with one summary line
# ("tests: N passed, M failed") over every test binary.
#
# The Spark reader (spark_server.py: one Spark session for every read with --engine spark) starts
# first, in the background, so that it boots while cargo compiles; the tests find it through
# SLUICE_TEST_SPARK (its port file). It is stopped, its JVM too, when this script exits; if it died
# during the run, the end of its log is printed before the summary.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
log=$(mktemp)
spark_dir=$(mktemp -d)
spark_log="$spark_dir/spark_server.log"
export SLUICE_TEST_SPARK="$spark_dir/port"
spark_pid=

stop_spark() {
  [ -n "$spark_pid" ] || return 0
  if kill -0 "$spark_pid" 2>/dev/null; then
    kill -TERM "$spark_pid" 2>/dev/null  # it stops Spark, whose JVM then exits
    for _ in $(seq 150); do kill -0 "$spark_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Its process group (--process-group: the server and the JVM): a few seconds to finish, then killed.
  for _ in $(seq 50); do kill -0 -- "-$spark_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$spark_pid" 2>/dev/null
  wait "$spark_pid" 2>/dev/null
  spark_pid=
}
trap 'stop_spark; rm -rf "$log" "$spark_dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$root/.tools/venv/bin/python" "$here/spark_server.py" --process-group --parent-pid $$ "$SLUICE_TEST_SPARK" \
  </dev/null >"$spark_log" 2>&1 &
spark_pid=$!

# Every test binary runs, even after one fails, so a run shows every failure at once.
"$here/with-broker.sh" "${CARGO:-cargo}" test --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if ! kill -0 "$spark_pid" 2>/dev/null; then
  echo "spark_server.py (the Spark reader) is not running any more; the end of its log:" >&2
  tail -n 40 "$spark_log" >&2
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
