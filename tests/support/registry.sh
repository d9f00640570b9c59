#!/usr/bin/env bash
# registry.sh start DIR  -> starts a schema registry on a free loopback port, waits until it answers,
#                           prints its Confluent-compatible base URL (http://127.0.0.1:PORT),
#                           writes DIR/pid; its log is DIR/registry.log
# registry.sh stop DIR   -> stops it
#
# The registry is tests/support/registry.py, an in-memory TEST STAND-IN for a Confluent Schema
# Registry (stdlib Python, nothing to install): a real one (Apicurio Registry, Confluent's) comes
# from Maven Central, which this project's machines cannot reach. registry.py's docstring lists
# what it serves. Optional: REGISTRY_BASIC_AUTH=user:pass makes it demand basic auth;
# REGISTRY_FIRST_ID=N makes the first schema id N (ids then differ from version numbers);
# REGISTRY_TLS_CERT=chain.pem REGISTRY_TLS_KEY=key.pem serves HTTPS (the URL printed is https://).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
case "$cmd" in
  start)
    rm -f "$dir/port"
    args=(--port 0 --port-file "$dir/port" --first-id "${REGISTRY_FIRST_ID:-1}")
    [ -z "${REGISTRY_BASIC_AUTH:-}" ] || args+=(--basic-auth "$REGISTRY_BASIC_AUTH")
    scheme=http
    if [ -n "${REGISTRY_TLS_CERT:-}" ]; then
      args+=(--tls-cert "$REGISTRY_TLS_CERT" --tls-key "${REGISTRY_TLS_KEY:?REGISTRY_TLS_KEY}")
      scheme=https
    fi
    python3 "$here/registry.py" "${args[@]}" >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 150); do
      if [ -s "$dir/port" ]; then
        url="$scheme://127.0.0.1:$(cat "$dir/port")"
        # Any HTTP answer (a 401 too, with basic auth on) means it is serving.
        if python3 - "$url/subjects" 2>/dev/null <<'PY'
import ssl, sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1, context=ssl._create_unverified_context()).read()
except urllib.error.HTTPError:
    pass
PY
        then
          echo "$url"
          exit 0
        fi
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
    echo "registry did not start; log:" >&2
    cat "$dir/registry.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      kill "$(cat "$dir/pid")" 2>/dev/null || true
      rm -f "$dir/pid" "$dir/port"
    fi
    ;;
esac
