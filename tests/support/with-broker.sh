#!/usr/bin/env bash
# Runs a command with a fresh local Apache Kafka broker (broker.sh): SLUICE_TEST_BROKERS /
# SLUICE_BROKERS point at its PLAINTEXT listener, the SASL_SSL and mTLS listeners and their
# credentials are in SLUICE_TEST_SASL_* / SLUICE_TEST_MTLS_BROKERS / SLUICE_TEST_TLS_DIR, and
# SLUICE_TEST_PYTHON is the readers' Python. The broker is stopped when the command ends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=$(mktemp -d)
trap '"$here/broker.sh" stop "$state"; rm -rf "$state"' EXIT
started=$(date +%s.%N)
brokers=$("$here/broker.sh" start "$state")
echo "broker: Apache Kafka $(readlink "$root/.tools/kafka/current") at $brokers (up in $(python3 -c "import time; print(round(time.time() - $started, 1))") s)" >&2
set -a
# shellcheck disable=SC1091
. "$state/env"
set +a
export SLUICE_BROKERS="$brokers"
export SLUICE_TEST_PYTHON="$root/.tools/venv/bin/python"
export SLUICE_KAFKA_BROKER_SH="$here/broker.sh"
"$@"
