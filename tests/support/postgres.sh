#!/usr/bin/env bash
# postgres.sh start DIR  -> starts a PostgreSQL 15 server on a free loopback port, waits until it
#                           accepts connections, prints its URL postgresql://sluice@127.0.0.1:PORT/sluice,
#                           writes DIR/pid; its log is DIR/postgres.log
# postgres.sh stop DIR   -> stops it at once (pg_ctl stop -m immediate: a crash, no checkpoint)
#
# The first start makes the cluster in DIR/data (initdb: superuser `sluice`, trust authentication for
# the Unix socket and 127.0.0.1, UTF8) and the database `sluice`; a later start of the same DIR
# starts that cluster again on the same port. The server listens on 127.0.0.1 only, its Unix socket
# is in DIR, and it is set for tests, not for keeping data: fsync off, small shared buffers. It has
# wal_level=logical with replication slots and WAL senders (10 each) for change data capture
# (Debezium's pgoutput). Programs from Debian's postgresql-15 (/usr/lib/postgresql/15/bin, or
# PG_BIN).
#
# PostgreSQL refuses to run as root (initdb, pg_ctl and postgres all do). Run as root (CI and the
# sessions are), it runs them as the user PG_USER (default `postgres`, which Debian's package
# creates, else `nobody`) and hands DIR to that user: DIR's parent folders must let it through
# (a tempfile::tempdir() under /tmp does). As any other user, they run as that user.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# The server programs: PG_BIN, else the newest Debian postgresql-N package's folder, else the
# folder of the pg_ctl on PATH.
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$bin" ] && command -v pg_ctl >/dev/null 2>&1; then bin=$(dirname "$(command -v pg_ctl)"); fi

# Runs a server program as the cluster's owner: ourselves, or PG_USER when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$owner" -- "$@"
  else
    "$@"
  fi
}
owner=
if [ "$(id -u)" = 0 ]; then
  owner=${PG_USER:-}
  if [ -z "$owner" ]; then
    if id -u postgres >/dev/null 2>&1; then owner=postgres; else owner=nobody; fi
  fi
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

fail() {
  echo "postgres: $1; the end of its log:" >&2
  tail -n 40 "$dir/postgres.log" >&2 2>/dev/null || true
  exit 1
}

case "$cmd" in
  start)
    [ -x "$bin/initdb" ] ||
      { echo "postgres: $bin/initdb is missing: install PostgreSQL 15 (apt-get install postgresql-15) or set PG_BIN" >&2; exit 1; }
    if [ -n "$owner" ]; then
      chown "$owner" "$dir"
      chmod 700 "$dir"
      as_owner test -w "$dir" ||
        { echo "postgres: user $owner cannot write to $dir (a parent folder shuts it out)" >&2; exit 1; }
    fi
    fresh=
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      fresh=1
      rm -rf "$dir/data"
      as_owner "$bin/initdb" -D "$dir/data" -U sluice -A trust -E UTF8 --locale=C --no-sync \
        --no-instructions >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; echo "postgres: initdb failed" >&2; exit 1; }
      # initdb -A trust writes trust lines for local, 127.0.0.1/32 and ::1/128 (replication too).
      cat >>"$dir/data/postgresql.conf" <<EOF

# tests/support/postgres.sh: a test server, not for keeping data.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
EOF
      if [ -n "${PG_TLS_CERT:-}" ]; then
        # TLS only: the certificate and key (PG_TLS_CERT, PG_TLS_KEY) serve every connection,
        # and TCP clients without TLS are refused (pg_hba: hostssl).
        cp "$PG_TLS_CERT" "$dir/data/server.crt"
        cp "${PG_TLS_KEY:?PG_TLS_KEY}" "$dir/data/server.key"
        chmod 600 "$dir/data/server.key"
        [ -z "$owner" ] || chown "$owner" "$dir/data/server.crt" "$dir/data/server.key"
        printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$dir/data/postgresql.conf"
        sed -i 's/^host\(\s\)/hostssl\1/' "$dir/data/pg_hba.conf"
      fi
      free_port >"$dir/port"
    fi
    port=$(cat "$dir/port")
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start \
      >/dev/null 2>&1 || fail "pg_ctl start failed"
    head -n 1 "$dir/data/postmaster.pid" >"$dir/pid"
    for _ in $(seq 1 600); do
      if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U sluice -d postgres; then break; fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || fail "the server exited"
      sleep 0.1
    done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U sluice -d postgres || fail "the server does not answer"
    if [ -n "$fresh" ]; then
      "$bin/createdb" -h 127.0.0.1 -p "$port" -U sluice sluice || fail "createdb sluice failed"
    fi
    echo "postgresql://sluice@127.0.0.1:$port/sluice"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      pid=$(head -n 1 "$dir/data/postmaster.pid")
      # A server a test paused (SIGSTOP) must run to shut down.
      kill -CONT "$pid" 2>/dev/null || true
      as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
