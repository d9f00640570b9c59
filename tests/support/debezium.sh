#!/usr/bin/env bash
# Change data capture for the tests: Debezium's PostgreSQL connector in a Kafka Connect standalone
# worker (Kafka 4.1.1's Connect runtime, Debezium 3.7; jars in .tools/debezium, installed by
# tools.sh from Maven), writing a table's changes to the topic <TOPIC_PREFIX>.<schema>.<table>.
#
# debezium.sh start DIR  -> the first time, writes DIR/worker.properties and
#                           DIR/connector.properties from the environment below and creates the
#                           topics; starts the worker (log DIR/connect.log, pid DIR/pid), waits
#                           until the connector and its task are RUNNING and its replication slot
#                           exists, prints the Connect REST URL (http://127.0.0.1:PORT; the
#                           connector is `sluice-cdc`: GET $URL/connectors/sluice-cdc/status).
#                           A later start of the same DIR keeps its settings (the environment is
#                           not read again; only the REST port changes) and resumes from the
#                           offsets stored in DIR/offsets: after a `kill`, Debezium sends again
#                           the events after the last flushed offset (at-least-once).
# debezium.sh stop DIR   -> stops it (TERM, then KILL after 10 s). The replication slot stays.
# debezium.sh kill DIR   -> SIGKILLs it (an unclean stop).
# debezium.sh drop-slot DIR -> stops it, then drops its replication slot and publication (a slot
#                           that nobody reads keeps WAL forever).
#
# Environment (read by the first start):
#   BROKERS      bootstrap servers (required)
#   PG_URL       postgresql://user[:password]@host:port/db (required; the user needs REPLICATION
#                or superuser, and CREATE on the database for the publication)
#   TABLES       table.include.list, e.g. public.accounts,public.payments (required)
#   TOPIC_PREFIX topic.prefix (default cdc)
#   SLOT         replication slot name; also the publication's (default sluice_<hash of DIR>)
#   CONVERTER    json (JsonConverter with schemas, the default), json-noschema (plain JSON), or
#                avro (Apicurio's AvroConverter in Confluent's wire format: magic byte 0 + 4-byte
#                schema id, the id of the registry's Confluent API; needs REGISTRY_URL, the
#                Confluent API URL registry.sh prints, and the optional jars that
#                DEBEZIUM_AVRO=1 tests/support/tools.sh installs into .tools/debezium-avro)
#   SNAPSHOT     snapshot.mode (default initial)
#   PARTITIONS   partitions of the topics it creates (default 3). The topics of TABLES entries
#                that are plain schema.table names are created before the worker starts;
#                Connect creates any other topic on its first record (topic.creation.default.*).
#   EXTRA_PROPS  a file of connector properties appended to connector.properties (later lines
#                win), e.g. skipped.operations=none to get TRUNCATE events (op "t").
#   DEBEZIUM_JAVA the java to run it with (Java 17 by default)
#   SLUICE_TEST_PYTHON a python with confluent-kafka and psycopg2 (default .tools/venv's)
#
# Decimals are decimal.handling.mode=precise (Connect's Decimal logical type: bytes + scale), a
# delete is followed by a tombstone (tombstones.on.delete=true), and TRUNCATE is skipped
# (Debezium's default skipped.operations=t). Offsets are flushed every second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cmd=${1:?start|stop|kill|drop-slot}
dir=${2:?state dir}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
libs="$root/.tools/debezium"
name=sluice-cdc
# Python with confluent-kafka and psycopg2 (topics, the slot): the tests' venv.
python=${SLUICE_TEST_PYTHON:-$root/.tools/venv/bin/python}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A java of version 17: DEBEZIUM_JAVA, one under /usr/lib/jvm/*17*, or the one on PATH.
connect_java() {
  local candidates=() j v
  [ -z "${DEBEZIUM_JAVA:-}" ] || candidates+=("$DEBEZIUM_JAVA")
  for j in $(ls -d /usr/lib/jvm/*17*/bin/java 2>/dev/null | sort -rV); do candidates+=("$j"); done
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for j in "${candidates[@]}"; do
    v=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ "$v" = 17 ]; then echo "$j"; return; fi
  done
  echo "debezium: Kafka Connect is run on Java 17; none found (set DEBEZIUM_JAVA)" >&2
  exit 1
}

stop_worker() { # SIGNAL WAIT_TENTHS
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    kill -CONT "$pid" 2>/dev/null || true
    kill "-$1" "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$2"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/pid"
  fi
}

fail() {
  echo "debezium: $1; the end of its log:" >&2
  tail -n 60 "$dir/connect.log" >&2 2>/dev/null || true
  stop_worker KILL 1
  exit 1
}

# The settings of PG_URL, as shell assignments: pg_user, pg_password, pg_host, pg_port, pg_db.
parse_pg_url() {
  python3 - "$1" <<'PY'
import shlex, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
assert u.scheme in ("postgresql", "postgres"), "PG_URL must be postgresql://user@host:port/db"
for k, v in (("pg_user", urllib.parse.unquote(u.username or "postgres")),
             ("pg_password", urllib.parse.unquote(u.password or "")),
             ("pg_host", u.hostname or "127.0.0.1"), ("pg_port", str(u.port or 5432)),
             ("pg_db", u.path.lstrip("/") or "postgres")):
    print(f"{k}={shlex.quote(v)}")
PY
}

configure() {
  : "${BROKERS:?BROKERS (bootstrap servers) is required}"
  : "${PG_URL:?PG_URL (postgresql://user@host:port/db) is required}"
  : "${TABLES:?TABLES (table.include.list) is required}"
  local prefix=${TOPIC_PREFIX:-cdc} partitions=${PARTITIONS:-3} converter=${CONVERTER:-json}
  local slot=${SLOT:-sluice_$(printf '%s' "$dir" | sha256sum | cut -c1-12)}
  local pg_user pg_password pg_host pg_port pg_db conv
  eval "$(parse_pg_url "$PG_URL")"
  case "$converter" in
    json)
      conv="key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true" ;;
    json-noschema)
      conv="key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false" ;;
    avro)
      : "${REGISTRY_URL:?REGISTRY_URL (the Confluent-compatible API URL of the registry) is required for CONVERTER=avro}"
      [ -d "$root/.tools/debezium-avro" ] ||
        { echo "debezium: .tools/debezium-avro is missing: run DEBEZIUM_AVRO=1 tests/support/tools.sh" >&2; exit 1; }
      # Apicurio's converter (2.6, on the registry's v2 API), framing records like Confluent's
      # serializer: magic byte 0 + the 4-byte content id, which is the id of Apicurio's
      # Confluent-compatible API (GET $REGISTRY_URL/schemas/ids/<id>); subjects <topic>-key and
      # <topic>-value (TopicIdStrategy, like Confluent's TopicNameStrategy).
      local v2=${REGISTRY_URL%/apis/ccompat/*}/apis/registry/v2 c
      conv=
      for c in key value; do
        conv+="$c.converter=io.apicurio.registry.utils.converter.AvroConverter
$c.converter.apicurio.registry.url=$v2
$c.converter.apicurio.registry.auto-register=true
$c.converter.apicurio.registry.headers.enabled=false
$c.converter.apicurio.registry.as-confluent=true
$c.converter.apicurio.registry.use-id=contentId
"
      done ;;
    *) echo "debezium: CONVERTER must be json, json-noschema or avro" >&2; exit 2 ;;
  esac
  cat >"$dir/worker.properties" <<EOF
# tests/support/debezium.sh: a Kafka Connect standalone worker for one Debezium connector.
bootstrap.servers=$BROKERS
$conv
offset.storage.file.filename=$dir/offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:0
# Everything is on the classpath: no plugin.path, and no class scanning (the connector is listed
# in its jar's service manifest; converters named by class need no listing).
plugin.discovery=service_load
task.shutdown.graceful.timeout.ms=5000
EOF
  cat >"$dir/connector.properties" <<EOF
# tests/support/debezium.sh: Debezium's PostgreSQL connector.
name=$name
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=$pg_host
database.port=$pg_port
database.user=$pg_user
database.password=$pg_password
database.dbname=$pg_db
topic.prefix=$prefix
table.include.list=$TABLES
plugin.name=pgoutput
slot.name=$slot
publication.name=$slot
publication.autocreate.mode=filtered
snapshot.mode=${SNAPSHOT:-initial}
tombstones.on.delete=true
decimal.handling.mode=precise
# Topics it writes to that do not exist yet (the broker does not auto-create them).
topic.creation.default.partitions=$partitions
topic.creation.default.replication.factor=1
$( [ "$converter" != avro ] || printf '%s\n' '# Avro: names Avro allows (Debezium replaces other characters with _).' schema.name.adjustment.mode=avro field.name.adjustment.mode=avro )
# A slot still held by the walsender of a killed worker is freed within seconds: retry meanwhile.
slot.max.retries=30
slot.retry.delay.ms=1000
EOF
  if [ -n "${EXTRA_PROPS:-}" ]; then
    { echo "# EXTRA_PROPS ($EXTRA_PROPS)"; cat "$EXTRA_PROPS"; } >>"$dir/connector.properties"
  fi
  printf 'SLOT=%s\nPG_URL=%s\n' "$slot" "$PG_URL" >"$dir/settings"
  # The topics of the plain schema.table entries of TABLES, before any record is written.
  "$python" - "$BROKERS" "$prefix" "$TABLES" "$partitions" <<'PY' || exit 1
import re, sys
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import KafkaError
brokers, prefix, tables, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
names = [f"{prefix}.{t.strip()}" for t in tables.split(",")
         if re.fullmatch(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+", t.strip())]
if names:
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names], request_timeout=30)
    for n, f in futures.items():
        try:
            f.result()
        except Exception as e:
            err = e.args[0] if e.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                sys.exit(f"debezium: creating topic {n}: {e}")
PY
}

case "$cmd" in
  start)
    ls "$libs"/debezium-connector-postgres-*.jar >/dev/null 2>&1 ||
      { echo "debezium: $libs is missing: run tests/support/tools.sh (make tools)" >&2; exit 1; }
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "debezium: already running in $dir" >&2
      exit 1
    fi
    [ -f "$dir/connector.properties" ] || configure
    java=$(connect_java)
    port=$(free_port)
    sed -i "s|^listeners=.*|listeners=http://127.0.0.1:$port|" "$dir/worker.properties"
    cp=("$libs/*")
    if grep -q '^value.converter=io.apicurio' "$dir/worker.properties"; then
      cp+=("$root/.tools/debezium-avro/*")
    fi
    cp_joined=$(IFS=:; echo "${cp[*]}")
    start_ns=$(date +%s%N)
    # Small: one connector, one task. C1 only: the worker is short-lived and the machine small.
    "$java" -Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/debezium/log4j2.properties" \
      -cp "$cp_joined" org.apache.kafka.connect.cli.ConnectStandalone \
      "$dir/worker.properties" "$dir/connector.properties" >>"$dir/connect.log" 2>&1 &
    echo $! >"$dir/pid"
    # shellcheck disable=SC1091
    . "$dir/settings"
    url="http://127.0.0.1:$port"
    deadline=$((SECONDS + 180))
    while :; do
      [ "$SECONDS" -lt "$deadline" ] || fail "the connector was not RUNNING after 180 s"
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || fail "the worker exited"
      state=$(python3 - "$url/connectors/$name/status" 2>/dev/null <<'PY' || true
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
tasks = [t["state"] for t in s.get("tasks", [])]
print(s["connector"]["state"], *tasks)
for t in s.get("tasks", []):
    if t["state"] == "FAILED":
        print(t.get("trace", ""), file=sys.stderr)
PY
)
      case "$state" in
        "RUNNING RUNNING")
          # The slot exists once the task has started; wait for it anyway, so that every change
          # committed after this script returns is captured.
          if "$python" - "$PG_URL" "$SLOT" <<'PY'
import sys, psycopg2
c = psycopg2.connect(sys.argv[1])
cur = c.cursor()
cur.execute("select 1 from pg_replication_slots where slot_name = %s", (sys.argv[2],))
sys.exit(0 if cur.fetchone() else 1)
PY
          then
            echo "started in $(( ($(date +%s%N) - start_ns) / 1000000 )) ms" >"$dir/startup"
            echo "$url"
            exit 0
          fi ;;
        *FAILED*) fail "the connector failed ($state)" ;;
      esac
      sleep 0.5
    done
    ;;
  stop)
    stop_worker TERM 100
    ;;
  kill)
    stop_worker KILL 1
    ;;
  drop-slot)
    stop_worker TERM 100
    if [ -f "$dir/settings" ]; then
      # shellcheck disable=SC1091
      . "$dir/settings"
      "$python" - "$PG_URL" "$SLOT" <<'PY'
import sys, time, psycopg2
try:
    c = psycopg2.connect(sys.argv[1], connect_timeout=5)
except psycopg2.OperationalError as e:  # the server is gone, and its slots with it
    sys.exit(f"debezium: slot not dropped: {str(e).strip()}")
c.autocommit = True
cur = c.cursor()
for _ in range(100):
    cur.execute("select active from pg_replication_slots where slot_name = %s", (sys.argv[2],))
    row = cur.fetchone()
    if row is None:
        break
    if not row[0]:
        cur.execute("select pg_drop_replication_slot(%s)", (sys.argv[2],))
        break
    time.sleep(0.1)
cur.execute(f'drop publication if exists "{sys.argv[2]}"')
PY
    fi
    ;;
  *)
    echo "usage: debezium.sh start|stop|kill|drop-slot DIR" >&2
    exit 2
    ;;
esac
