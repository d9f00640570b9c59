#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need into .tools/ (idempotent):
#  - Apache Kafka (the broker users run: KRaft, single node), its jars from Maven (checked);
#  - a Python venv with the independent readers: DuckDB (pinned to the release the extension
#    wheels ship for), its delta, iceberg and avro extensions, pyarrow, the Delta Lake `deltalake`
#    package, polars, pyiceberg (with psycopg2, for its SQL catalog on PostgreSQL) and pyspark
#    (Spark 4.0, for spark_server.py); moto (an S3 server) and azure-storage-blob (to create
#    Azurite containers); fastavro (an independent Avro encoder/decoder for the schema-registry
#    tests); confluent-kafka (an independent producer: transactions, tombstones);
#  - the Spark readers' Delta Lake and Apache Iceberg jars from Maven (checked) into
#    .tools/spark-jars (spark_server.py runs Spark with them on Java 17);
#  - an Apache Iceberg REST catalog (the REST catalog server of Iceberg 1.10's test fixtures) and
#    its jars from Maven (checked) into .tools/iceberg-rest (iceberg_rest.sh runs it on Java 17);
#  - Kafka Connect (standalone worker) and Debezium's PostgreSQL connector, their jars from Maven
#    (checked) into .tools/debezium (debezium.sh runs them on Java 17, for change data capture);
#  - Azurite (an Azure Blob emulator) from npm;
#  - Apicurio Registry (a schema registry with Confluent's API) from Maven.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

# Apache Kafka, the test broker: its jars resolved by Maven from tests/support/kafka/pom.xml
# (Maven checks each download against the repository's checksum with -C), then every jar checked
# against tests/support/kafka/jars.sha256, kept in this repository.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/tests/support/kafka/pom.xml")
kafka="$tools/kafka/$KAFKA_VERSION"
if ! (cd "$kafka/libs" 2>/dev/null && sha256sum -c --quiet --strict "$root/tests/support/kafka/jars.sha256") >/dev/null 2>&1; then
  echo "tools: installing Apache Kafka $KAFKA_VERSION (jars from Maven) into .tools/kafka" >&2
  command -v java >/dev/null || { echo "tools: Java 17 or later is needed for the Kafka broker" >&2; exit 1; }
  command -v mvn >/dev/null || { echo "tools: Maven is needed to install the Kafka broker" >&2; exit 1; }
  rm -rf "$kafka" && mkdir -p "$kafka"
  mvn -q -B -C -f "$root/tests/support/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$kafka/libs.tmp"
  (cd "$kafka/libs.tmp" && sha256sum -c --quiet --strict "$root/tests/support/kafka/jars.sha256")
  # Exactly the checked jars, nothing more.
  [ "$(ls "$kafka/libs.tmp" | wc -l)" = "$(wc -l < "$root/tests/support/kafka/jars.sha256")" ]
  mv "$kafka/libs.tmp" "$kafka/libs"
fi
ln -sfn "$KAFKA_VERSION" "$tools/kafka/current"

# pyspark is a 434 MB sdist that pip builds in ~30 s (467 MB installed); Spark 4.0 pairs with the
# Delta 4.0 and Iceberg spark-runtime-4.0 jars below. The iceberg extension reads Avro manifests
# through the avro extension: both are loaded from these wheels' files, never downloaded.
DUCKDB=1.5.5
PYSPARK=4.0.1
PYICEBERG=0.12.0
# psycopg2-binary: the PostgreSQL driver of pyiceberg's SqlCatalog (SQLAlchemy's postgresql+psycopg2),
# for catalogs kept in tests/support/postgres.sh's server (pyiceberg's `sql-postgres` extra).
PSYCOPG2=2.9.13
if ! "$tools/venv/bin/python" -c "
import duckdb, pyarrow, moto, azure.storage.blob, deltalake, polars, duckdb_extension_delta, fastavro, confluent_kafka
import duckdb_extension_iceberg, duckdb_extension_avro, pyspark, pyiceberg, sqlalchemy, psycopg2
from pyiceberg.table import StaticTable
assert duckdb.__version__ == '$DUCKDB', duckdb.__version__
assert pyspark.__version__ == '$PYSPARK', pyspark.__version__
assert pyiceberg.__version__ == '$PYICEBERG', pyiceberg.__version__
assert psycopg2.__version__.split()[0] == '$PSYCOPG2', psycopg2.__version__" >/dev/null 2>&1; then
  echo "tools: installing duckdb $DUCKDB (+ delta, iceberg, avro), pyarrow, deltalake, polars, pyiceberg $PYICEBERG (+ psycopg2 $PSYCOPG2), pyspark $PYSPARK, moto, azure-storage-blob, fastavro and confluent-kafka into .tools/venv" >&2
  [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==$DUCKDB" "duckdb-extension-delta==$DUCKDB" "deltalake==1.6.6" "polars>=1.30" \
    "pyarrow>=16" "moto[server]==5.2.5" "azure-storage-blob>=12" "fastavro==1.13.*" \
    "confluent-kafka==2.12.*" "duckdb-extension-iceberg==$DUCKDB" "duckdb-extension-avro==$DUCKDB" \
    "pyiceberg[pyarrow,sql-sqlite,sql-postgres]==$PYICEBERG" "psycopg2-binary==$PSYCOPG2" \
    "pyspark==$PYSPARK"
fi

# maven_jars DEST POM SUMS WHAT [MVN ARGS...]: the jars POM resolves (dependency:copy-dependencies)
# into DEST, every one checked against SUMS (sha256sum lines). DEST holds exactly the checked
# jars (readers put every jar in it on their classpath); a DEST that already does is kept.
maven_jars() {
  local dest=$1 pom=$2 sums=$3 what=$4
  shift 4
  if (cd "$dest" 2>/dev/null && sha256sum -c --quiet --strict "$sums" \
      && [ "$(ls | wc -l)" = "$(wc -l < "$sums")" ]) >/dev/null 2>&1; then
    return 0
  fi
  echo "tools: installing $what (jars from Maven) into ${dest#"$root"/}" >&2
  command -v mvn >/dev/null || { echo "tools: Maven is needed to install $what" >&2; exit 1; }
  rm -rf "$dest" "$dest.tmp"
  mvn -q -B -C -f "$pom" dependency:copy-dependencies "$@" -DoutputDirectory="$dest.tmp"
  (cd "$dest.tmp" && sha256sum -c --quiet --strict "$sums")
  [ "$(ls "$dest.tmp" | wc -l)" = "$(wc -l < "$sums")" ]
  mv "$dest.tmp" "$dest"
}

# The Spark readers' jars (Delta Lake, Apache Iceberg; transitive dependencies excluded: pyspark
# has them), for spark_server.py.
maven_jars "$tools/spark-jars" "$root/tests/support/spark/pom.xml" \
  "$root/tests/support/spark/jars.sha256" "the Spark readers' Delta Lake and Iceberg jars"

# The Iceberg REST catalog server (org.apache.iceberg.rest.RESTCatalogServer, from Iceberg's test
# fixtures) and what it runs with, for iceberg_rest.sh.
maven_jars "$tools/iceberg-rest" "$root/tests/support/iceberg-rest/pom.xml" \
  "$root/tests/support/iceberg-rest/jars.sha256" "the Iceberg REST catalog server" \
  -DincludeScope=runtime

# Kafka Connect (standalone) and Debezium's PostgreSQL connector, for change data capture tests
# (debezium.sh runs them on Java 17). A folder of their own: Connect's Jetty, Jersey and Jackson
# stay off the broker's classpath.
maven_jars "$tools/debezium" "$root/tests/support/debezium/pom.xml" \
  "$root/tests/support/debezium/jars.sha256" "Kafka Connect and Debezium's PostgreSQL connector" \
  -DincludeScope=runtime
# Optional (DEBEZIUM_AVRO=1): Apicurio's Avro converter for Connect (Confluent's wire format against
# registry.sh's Apicurio Registry), for debezium.sh's CONVERTER=avro.
if [ "${DEBEZIUM_AVRO:-0}" = 1 ]; then
  maven_jars "$tools/debezium-avro" "$root/tests/support/debezium/avro/pom.xml" \
    "$root/tests/support/debezium/avro/jars.sha256" "Apicurio's Avro converter for Kafka Connect" \
    -DincludeScope=runtime
fi

# Azurite, the Azure Blob emulator, for the storage conformance tests.
if [ ! -x "$tools/node_modules/.bin/azurite-blob" ]; then
  echo "tools: installing azurite into .tools/node_modules" >&2
  npm install --prefix "$tools" --no-audit --no-fund --silent azurite@3
fi

# Apicurio Registry, a real Confluent-compatible schema registry for the Avro tests: its packaged
# application (io.apicurio:apicurio-registry-app, classifier `all`, a tar.gz) from Maven, checked
# against tests/support/registry/apicurio.sha256. It needs Java 21 or later (registry.sh finds one).
APICURIO_VERSION=$(sed -n 's/.*apicurio-registry-app-\(.*\)-all.tar.gz$/\1/p' "$root/tests/support/registry/apicurio.sha256")
apicurio="$tools/apicurio/$APICURIO_VERSION"
if [ ! -f "$apicurio/quarkus-run.jar" ]; then
  echo "tools: installing Apicurio Registry $APICURIO_VERSION (from Maven) into .tools/apicurio" >&2
  command -v mvn >/dev/null || { echo "tools: Maven is needed to install the schema registry" >&2; exit 1; }
  rm -rf "$tools/apicurio/dl" "$apicurio.tmp" && mkdir -p "$tools/apicurio/dl" "$apicurio.tmp"
  mvn -q -B -C org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$tools/apicurio/dl"
  (cd "$tools/apicurio/dl" && sha256sum -c --quiet --strict "$root/tests/support/registry/apicurio.sha256")
  tar xzf "$tools/apicurio/dl/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$apicurio.tmp"
  rm -rf "$apicurio" "$tools/apicurio/dl" && mv "$apicurio.tmp" "$apicurio"
fi
ln -sfn "$APICURIO_VERSION" "$tools/apicurio/current"

# openssl makes the test CA and certificate of the https:// registry test.
if ! command -v openssl >/dev/null 2>&1; then
  echo "tools: installing openssl (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq openssl >/dev/null; else sudo apt-get install -y -qq openssl >/dev/null; fi
fi
