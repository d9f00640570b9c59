#!/usr/bin/env bash
# registry.sh start DIR  -> starts a schema registry on free loopback ports, waits until it answers,
#                           prints its Confluent-compatible base URL (http://127.0.0.1:PORT
#                           followed by the path of Apicurio's Confluent API, $ccompat below),
#                           writes DIR/pid; its log is DIR/registry.log
# registry.sh stop DIR   -> stops it
#
# The registry is Apicurio Registry (installed into .tools/apicurio by tools.sh from Maven), with
# its in-memory storage, serving Confluent's REST API under the URL path $ccompat. Ids come from one
# counter shared with its other records: never assume them, read them from the answers.
# Optional: REGISTRY_BASIC_AUTH=user:pass makes it demand basic auth; REGISTRY_TLS_CERT=chain.pem
# REGISTRY_TLS_KEY=key.pem serves HTTPS only (the URL printed is https://). REGISTRY_JAVA names
# the java to run it with (Java 21 or later; by default the newest one found).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
# The URL path of Apicurio's Confluent-compatible API.
ccompat=apis/ccompat/v7

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A java of version 21 or later: REGISTRY_JAVA, the one on PATH, or the newest under /usr/lib/jvm.
registry_java() {
  local candidates=() j v
  [ -z "${REGISTRY_JAVA:-}" ] || candidates+=("$REGISTRY_JAVA")
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for j in $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do candidates+=("$j"); done
  for j in "${candidates[@]}"; do
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ -n "$v" ] && [ "${v%%.*}" -ge 21 ] 2>/dev/null; then echo "$j"; return; fi
  done
  echo "registry: Apicurio Registry needs Java 21 or later; none found (set REGISTRY_JAVA)" >&2
  exit 1
}

case "$cmd" in
  start)
    app="$root/.tools/apicurio/current/quarkus-run.jar"
    [ -f "$app" ] || { echo "registry: $app is missing: run tests/support/tools.sh (make tools)" >&2; exit 1; }
    java=$(registry_java)
    http=$(free_port)
    args=(-Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$http"
          -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port=0
          -Dquarkus.http.access-log.enabled=false
          -Dapicurio.datasource.jdbc.initial-size=2 -Dapicurio.datasource.jdbc.min-size=2)
    scheme=http port=$http
    if [ -n "${REGISTRY_TLS_CERT:-}" ]; then
      port=$(free_port) scheme=https
      args+=(-Dquarkus.http.ssl-port="$port"
             -Dquarkus.http.ssl.certificate.files="$REGISTRY_TLS_CERT"
             -Dquarkus.http.ssl.certificate.key-files="${REGISTRY_TLS_KEY:?REGISTRY_TLS_KEY}"
             -Dquarkus.http.insecure-requests=disabled)
    fi
    if [ -n "${REGISTRY_BASIC_AUTH:-}" ]; then
      user=${REGISTRY_BASIC_AUTH%%:*} pass=${REGISTRY_BASIC_AUTH#*:}
      args+=(-Dquarkus.http.auth.basic=true
             -Dquarkus.security.users.embedded.enabled=true
             -Dquarkus.security.users.embedded.plain-text=true
             -Dquarkus.security.users.embedded.users."$user"="$pass"
             -Dquarkus.security.users.embedded.roles."$user"=sr-admin)
    fi
    # Small and quick to start: a test registry holds a few schemas.
    "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${args[@]}" -jar "$app" \
      >"$dir/registry.log" 2>&1 &
    echo $! >"$dir/pid"
    url="$scheme://127.0.0.1:$port/$ccompat"
    for _ in $(seq 1 1200); do
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
      pid=$(cat "$dir/pid")
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
esac
