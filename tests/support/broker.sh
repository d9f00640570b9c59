#!/usr/bin/env bash
# The test broker: Apache Kafka (from .tools/kafka, installed by tools.sh), one KRaft node that is
# broker and controller, on free loopback ports.
#
# broker.sh start DIR   formats DIR (the first time) and starts the broker; prints the PLAINTEXT
#                       host:port. A DIR that was started before keeps its ports, its log and its
#                       credentials: `start` after `kill` is a restart on the same log directory.
# broker.sh stop DIR    stops it (SIGTERM, then SIGKILL after 20 s)
# broker.sh kill DIR    SIGKILLs it (a crash)
#
# Besides PLAINTEXT, the broker listens on SASL_SSL (SCRAM-SHA-512 over TLS) and on SSL with
# client certificates required (mTLS), with a CA made here by openssl. DIR/env holds what a
# client needs (shell syntax, also read by the tests):
#   SLUICE_TEST_SASL_BROKERS, SLUICE_TEST_SASL_USER, SLUICE_TEST_SASL_PASSWORD,
#   SLUICE_TEST_MTLS_BROKERS, SLUICE_TEST_TLS_DIR (ca.pem, client.pem, client.key, and
#   rogue-ca.pem, rogue-client.pem, rogue-client.key: a CA the broker does not trust).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:?start|stop|kill}
dir=${2:?state dir}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
libs="$root/.tools/kafka/current/libs"
java=${JAVA:-java}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

make_tls() {
  local t="$dir/tls"
  mkdir -p "$t"
  (
    cd "$t"
    ossl() { openssl "$@" 2>/dev/null; }
    # A CA, the broker's certificate (127.0.0.1 and localhost), a client certificate.
    ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=sluice-test-ca" -keyout ca.key -out ca.pem
    ossl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
    ossl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile broker.ext -out broker.pem
    ossl req -newkey rsa:2048 -nodes -subj "/CN=sluice-loader" -keyout client.key -out client.csr
    ossl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out client.pem
    # A CA the broker does not know, and a client certificate it signed.
    ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rogue-ca" -keyout rogue-ca.key -out rogue-ca.pem
    ossl req -newkey rsa:2048 -nodes -subj "/CN=rogue-loader" -keyout rogue-client.key -out rogue-client.csr
    ossl x509 -req -in rogue-client.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial -days 30 -out rogue-client.pem
    # Kafka's PEM key store: the key (PKCS#8, unencrypted) and the certificate chain in one file.
    ossl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
    cat broker.pk8 broker.pem ca.pem >broker-keystore.pem
    rm -f ./*.csr ./*.ext ./*.srl
  )
}

configure() {
  local plain ctl sasl mtls password
  plain=$(free_port) ctl=$(free_port) sasl=$(free_port) mtls=$(free_port)
  password=$(python3 -c 'import secrets; print("pw-" + secrets.token_hex(12))')
  make_tls
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$plain,CONTROLLER://127.0.0.1:$ctl,SASL_SSL://127.0.0.1:$sasl,SSL://127.0.0.1:$mtls
advertised.listeners=PLAINTEXT://127.0.0.1:$plain,SASL_SSL://127.0.0.1:$sasl,SSL://127.0.0.1:$mtls
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
# The tests' loaders use 2-3 s session timeouts, so that a killed loader's partitions move fast.
group.min.session.timeout.ms=500
# Tests wait on these: retention and the log cleaner act within seconds, not minutes.
log.retention.check.interval.ms=1000
log.cleaner.backoff.ms=500
log.initial.task.delay.ms=1000
# A transaction left open by a killed producer is aborted after its timeout (the producer's
# transaction.timeout.ms, at most this).
transaction.max.timeout.ms=60000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
# SASL_SSL: SCRAM-SHA-512 over TLS.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# SSL: mutual TLS, a client certificate signed by the test CA required.
listener.name.ssl.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
ssl.endpoint.identification.algorithm=
EOF
  cat >"$dir/env" <<EOF
SLUICE_TEST_BROKERS=127.0.0.1:$plain
SLUICE_TEST_SASL_BROKERS=127.0.0.1:$sasl
SLUICE_TEST_SASL_USER=sluice
SLUICE_TEST_SASL_PASSWORD=$password
SLUICE_TEST_MTLS_BROKERS=127.0.0.1:$mtls
SLUICE_TEST_TLS_DIR=$dir/tls
EOF
  local cluster
  # A cluster id as Kafka's `random-uuid` makes one: never starting with `-`, which the storage
  # tool's argument parser would take for an option (one id in 64 did, and the broker never
  # started).
  cluster=$(python3 -c '
import base64, uuid
while True:
    c = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not c.startswith("-"):
        print(c)
        break')
  "$java" -cp "$libs/*" -Dlog4j2.configurationFile="$root/tests/support/kafka/log4j2.yaml" \
    kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=sluice,password=$password]" >"$dir/format.log" 2>&1 || {
    cat "$dir/format.log" >&2
    exit 1
  }
}

case "$cmd" in
  start)
    [ -d "$libs" ] || { echo "broker: $libs is missing: run tests/support/tools.sh (make tools)" >&2; exit 1; }
    [ -f "$dir/env" ] || configure
    # shellcheck disable=SC1091
    . "$dir/env"
    port=${SLUICE_TEST_BROKERS##*:}
    # A 2-core, 24 GiB machine: a small fixed heap, few threads, and no JIT warm-up beyond C1
    # for the short-lived tool; the broker itself keeps the full JIT.
    KAFKA_HEAP=${KAFKA_HEAP:--Xms512m -Xmx1g}
    # shellcheck disable=SC2086
    nohup "$java" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$root/tests/support/kafka/log4j2.yaml" \
      -cp "$libs/*" kafka.Kafka "$dir/server.properties" >>"$dir/broker.log" 2>&1 &
    echo $! >"$dir/pid"
    # Up when the broker says so (its listeners accept connections a moment before it serves).
    for _ in $(seq 1 600); do
      if grep -q "Kafka Server started" "$dir/broker.log" 2>/dev/null \
        && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
        # Count the starts, so a restart waits for its own line.
        n=$(grep -c "Kafka Server started" "$dir/broker.log")
        if [ "$n" -gt "$(cat "$dir/starts" 2>/dev/null || echo 0)" ]; then
          echo "$n" >"$dir/starts"
          echo "127.0.0.1:$port"
          exit 0
        fi
      fi
      if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "broker did not start; log:" >&2
    tail -50 "$dir/broker.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
  kill)
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/pid"
    fi
    ;;
  *)
    echo "usage: broker.sh start|stop|kill DIR" >&2
    exit 2
    ;;
esac
