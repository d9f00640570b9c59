#!/usr/bin/env bash
# Runs a command with a fresh local broker: SLUICE_TEST_BROKERS / SLUICE_BROKERS point at it and
# SLUICE_TEST_PYTHON at the readers' Python. The broker is stopped when the command ends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=$(mktemp -d)
trap '"$here/broker.sh" stop "$state"; rm -rf "$state"' EXIT
brokers=$("$here/broker.sh" start "$state")
echo "broker: tansu at $brokers" >&2
export SLUICE_TEST_BROKERS="$brokers" SLUICE_BROKERS="$brokers"
export SLUICE_TEST_PYTHON="$root/.tools/venv/bin/python"
export SLUICE_TANSU="$root/.tools/bin/tansu"
"$@"
