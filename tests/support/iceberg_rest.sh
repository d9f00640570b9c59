#!/usr/bin/env bash
# iceberg_rest.sh start DIR  -> starts an Apache Iceberg REST catalog on a free port, waits until it
#                               answers, prints its base URL (http://127.0.0.1:PORT; the API is
#                               under /v1), writes DIR/pid; its log is DIR/rest.log
# iceberg_rest.sh stop DIR   -> stops it (TERM, then KILL after 5 s)
#
# The server is the REST catalog server of Apache Iceberg's own test fixtures
# (org.apache.iceberg.rest.RESTCatalogServer, Iceberg 1.10; installed into .tools/iceberg-rest by
# tools.sh from Maven). It serves a JdbcCatalog over the REST catalog API: its catalog database is
# DIR/catalog.db (sqlite), or ICEBERG_REST_JDBC_URI (a JDBC URI, e.g. jdbc:sqlite:/path/catalog.db
# of a catalog another program wrote); tables it creates go under DIR/warehouse. The backing
# JdbcCatalog's name (the catalog_name column of its tables) is `rest_backend` unless
# ICEBERG_REST_CATALOG_NAME names another: to serve the tables a pyiceberg SqlCatalog("sluice", …)
# wrote, set it to `sluice`. Any other CATALOG_* variable of the environment is passed on as a
# catalog property too (CATALOG_A_B -> a.b, CATALOG_A__B -> a-b; that is the server's own rule).
#
# It listens on all interfaces (0.0.0.0): the fixture has no setting for the host. It needs Java 17:
# on Java 25 it starts, but every table write fails in Hadoop ("getSubject is not supported").
# ICEBERG_REST_JAVA names the java to run it with (by default one of version 17 that is found).
# It logs a stack trace (NoSuchTableException, 404) for every "does this table exist?" request:
# harmless.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A java of version 17: ICEBERG_REST_JAVA, one under /usr/lib/jvm/*17*, the one on PATH, or any
# other under /usr/lib/jvm.
rest_java() {
  local candidates=() j v
  [ -z "${ICEBERG_REST_JAVA:-}" ] || candidates+=("$ICEBERG_REST_JAVA")
  for j in $(ls -d /usr/lib/jvm/*17*/bin/java 2>/dev/null | sort -rV); do candidates+=("$j"); done
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for j in $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do candidates+=("$j"); done
  for j in "${candidates[@]}"; do
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ "$v" = 17 ]; then echo "$j"; return; fi
  done
  echo "iceberg_rest: the Iceberg REST catalog needs Java 17; none found (set ICEBERG_REST_JAVA)" >&2
  exit 1
}

stop_server() {
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
}

case "$cmd" in
  start)
    libs="$root/.tools/iceberg-rest"
    [ -f "$libs/iceberg-open-api-1.10.1-test-fixtures.jar" ] ||
      { echo "iceberg_rest: $libs is missing: run tests/support/tools.sh (make tools)" >&2; exit 1; }
    java=$(rest_java)
    port=$(free_port)
    mkdir -p "$dir/warehouse"
    env=(CATALOG_REST_PORT="$port"
         CATALOG_WAREHOUSE="file://$dir/warehouse"
         CATALOG_URI="${ICEBERG_REST_JDBC_URI:-jdbc:sqlite:$dir/catalog.db}")
    [ -z "${ICEBERG_REST_CATALOG_NAME:-}" ] || env+=(CATALOG_CATALOG_NAME="$ICEBERG_REST_CATALOG_NAME")
    # Small and quick to start: a test catalog holds a few tables.
    env "${env[@]}" "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -cp "$libs/*" org.apache.iceberg.rest.RESTCatalogServer >"$dir/rest.log" 2>&1 &
    echo $! >"$dir/pid"
    url="http://127.0.0.1:$port"
    deadline=$((SECONDS + 120))
    while [ "$SECONDS" -lt "$deadline" ]; do
      if python3 - "$url/v1/config" 2>/dev/null <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()
PY
      then
        echo "$url"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "iceberg_rest: the REST catalog exited; the end of its log:" >&2
        tail -n 40 "$dir/rest.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    echo "iceberg_rest: the REST catalog did not answer within 120 s; the end of its log:" >&2
    tail -n 40 "$dir/rest.log" >&2
    stop_server
    exit 1
    ;;
  stop)
    stop_server
    ;;
  *)
    echo "usage: iceberg_rest.sh start|stop DIR" >&2
    exit 2
    ;;
esac
