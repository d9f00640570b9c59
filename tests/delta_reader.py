#!/usr/bin/env python3
"""An independent reader of a Delta Lake table, as an analyst would read it, with four engines.

    delta_reader.py --table PATH_OR_URL --engine {deltalake,duckdb,polars,spark} [--version N]
                    [--where SQL_PREDICATE_ON_PARTITION_COLUMNS] [--s3-endpoint http://127.0.0.1:PORT]
                    [--loop-until FILE]

Each read loads one snapshot of the table (the latest, or --version N), runs the counts on it and prints
one JSON object on stdout: engine, version, rows, distinct_offsets (distinct (_topic, _partition, _offset)),
distinct_ids / id_min / id_max (over event_id "evt-000123" -> 123; null without an event_id column),
partition_columns, files (data files the engine reads under --where, relative to the table root, sorted;
null if the engine only reports a count), files_scanned and columns (name -> type as the engine sees it).

- deltalake: delta-rs; counts through its DataFusion QueryBuilder, files from file_uris(predicate).
- duckdb: the delta extension shipped by the duckdb_extension_delta wheel (loaded from the wheel's files,
  never downloaded); the latest version is pinned by listing _delta_log, files are the data files DuckDB's
  FileSystem log shows it opened. Local tables only: S3 needs httpfs, which cannot be installed offline,
  so an s3:// table prints {"engine": "duckdb", "unsupported": "s3", ...} and exits 0.
- polars: scan_delta at a pinned version, counts with polars SQL/expressions, files from the optimized
  plan (polars prints the full list only for one or two files, otherwise the first file and a count).
- spark: Apache Spark with Delta Lake, through the test run's one Spark session (tests/support/spark_server.py,
  started by run-tests.sh; its port file is named by $SLUICE_TEST_SPARK, waited for up to 120 s); files from
  DataFrame.inputFiles() under --where; the result also has "plan", Spark's executed plan of the scan.
  Local tables only: an s3:// table prints {"engine": "spark", "unsupported": "s3", ...} and exits 0.

--rows prints instead {"engine", "version", "rows": [every row, ordered by (_partition, _offset), in one canonical
JSON form: bytes as hex, decimals as strings, dates and timestamps as ISO 8601 (timestamps in UTC), maps as objects,
whichever shape the engine returns them in]}, so rows read by different engines can be compared value for value.

--loop-until FILE repeats reads (each of the then latest version) until FILE exists, then reads once more.
Any reader error exits non-zero with a message on stderr.
"""
import argparse
import glob
import json
import os
import re
import sys
import time
from urllib.parse import unquote, urlparse

import pyarrow as pa

OFFSET_COLS = ("_topic", "_partition", "_offset")


def storage_options(a):
    if not a.table.startswith("s3://"):
        return None
    if not a.s3_endpoint:
        raise SystemExit("delta_reader: an s3:// table needs --s3-endpoint")
    opts = {"AWS_ENDPOINT_URL": a.s3_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
            "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(k):
            opts[k] = os.environ[k]
    return opts


def local_path(table):
    return unquote(urlparse(table).path) if table.startswith("file://") else os.path.abspath(table)


def relative(paths, root):
    """Data file paths relative to the table root (root: a local path or an s3:// URL)."""
    root = root.removeprefix("file://").rstrip("/") + "/"
    out = []
    for p in paths:
        p = p.removeprefix("file://")
        if not p.startswith(root):
            raise RuntimeError(f"data file {p} is outside the table root {root}")
        out.append(unquote(p[len(root):]))
    return sorted(out)


def sql_counts(run, has_id, where, keys=OFFSET_COLS):
    """The counts, through any SQL engine: run(sql) -> first row as a tuple; keys: the columns that
    identify a record."""
    w = f"WHERE {where}" if where else ""
    ids = ("count(DISTINCT event_id), min(CAST(substr(event_id, 5) AS BIGINT)), "
           "max(CAST(substr(event_id, 5) AS BIGINT))" if has_id else "NULL AS a, NULL AS b, NULL AS c")
    rows, distinct_ids, id_min, id_max = run(f"SELECT count(*), {ids} FROM t {w}")
    cols = ", ".join(f'"{c}"' for c in keys)
    (distinct_offsets,) = run(f"SELECT count(*) FROM (SELECT DISTINCT {cols} FROM t {w}) d")
    return dict(rows=rows, distinct_offsets=distinct_offsets, distinct_ids=distinct_ids, id_min=id_min, id_max=id_max)


def read_deltalake(a, so):
    from deltalake import DeltaTable, QueryBuilder
    dt = DeltaTable(a.table, version=a.version, storage_options=so)  # one snapshot per read
    qb = QueryBuilder().register("t", dt)
    schema = pa.RecordBatchReader.from_stream(qb.execute("SELECT * FROM t LIMIT 0")).schema
    r = sql_counts(lambda sql: tuple(pa.table(qb.execute(sql)).to_pylist()[0].values()),
                   "event_id" in schema.names, a.where)
    files = relative(dt.file_uris(file_pruning_predicate=a.where), dt.table_uri)
    return dict(version=dt.version(), **r, partition_columns=list(dt.metadata().partition_columns),
                files=files, files_scanned=len(files), columns={f.name: str(f.type) for f in schema})


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def duckdb_extension_path():
    import duckdb_extension_delta
    found = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*",
                                   "delta.duckdb_extension"))
    if len(found) != 1:
        raise RuntimeError(f"expected one delta.duckdb_extension in the duckdb_extension_delta package, found {found}")
    return found[0]


def duckdb_snapshot(a):
    """A DuckDB connection with the delta extension, the table's folder, and the version to read:
    --version, or the latest in the log (pinned, so that every scan reads the same snapshot)."""
    import duckdb
    root = local_path(a.table)
    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    con.execute(f"LOAD {sql_str(duckdb_extension_path())}")
    version = a.version
    if version is None:
        names = con.execute("SELECT file FROM glob(?)", [os.path.join(root, "_delta_log", "*")]).fetchall()
        versions = [int(m.group(1)) for (f,) in names
                    if (m := re.fullmatch(r"(\d{20})\.(json|checkpoint(\..+)?\.parquet)", os.path.basename(f)))]
        if not versions:
            raise RuntimeError(f"no Delta log under {root}/_delta_log")
        version = max(versions)
    return con, root, version


def read_duckdb(a, so):
    if so is not None:
        return {"unsupported": "s3", "reason": "DuckDB reads S3 through httpfs, which cannot be installed offline"}
    con, root, version = duckdb_snapshot(a)
    src = f"delta_scan({sql_str(root)}, version={int(version)})"
    columns = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall())
    con.execute(f"CREATE VIEW t AS SELECT * FROM {src}")
    parts = {k for (k,) in con.execute(f"SELECT DISTINCT unnest(map_keys(partitions)) "
                                       f"FROM delta_list_files({sql_str(root)}, version={int(version)})").fetchall()}
    con.execute("CALL enable_logging('FileSystem')")
    r = sql_counts(lambda sql: con.execute(sql).fetchone(), "event_id" in columns, a.where)
    opened = {json.loads(m)["path"] for (m,) in con.execute(
        "SELECT message FROM duckdb_logs WHERE type = 'FileSystem'").fetchall()}
    files = relative([p for p in opened if "/_delta_log/" not in p and "/deletion_vector_" not in p], root)
    return dict(version=int(version), **r, partition_columns=[c for c in columns if c in parts],
                files=files, files_scanned=len(files), columns=columns)


def read_polars(a, so):
    import polars as pl
    from deltalake import DeltaTable
    # polars resolves the log through deltalake too; pin the version so that the scan reads one snapshot
    dt = DeltaTable(a.table, version=a.version, storage_options=so)
    version = dt.version()
    scan = pl.scan_delta(a.table, version=version, storage_options=so)
    lf = pl.SQLContext(t=scan).execute(f"SELECT * FROM t WHERE {a.where}") if a.where else scan
    schema = scan.collect_schema()
    aggs = [pl.len().alias("rows"), pl.struct(*OFFSET_COLS).n_unique().alias("distinct_offsets")]
    if "event_id" in schema:
        n = pl.col("event_id").str.slice(4).cast(pl.Int64)
        aggs += [pl.col("event_id").drop_nulls().n_unique().alias("distinct_ids"),
                 n.min().alias("id_min"), n.max().alias("id_max")]
    q = lf.select(aggs)
    r = dict(distinct_ids=None, id_min=None, id_max=None) | q.collect().to_dicts()[0]
    # the optimized plan names the files left after pruning: "Parquet SCAN [a, b]" or "[a, ... N other sources]"
    m = re.search(r"SCAN \[(.*?)(?:, \.\.\. (\d+) other sources)?\]\n", q.explain())
    if m is None:
        raise RuntimeError(f"cannot find the scan in the polars plan:\n{q.explain()}")
    shown = m.group(1).split(", ") if m.group(1) else []
    scanned = len(shown) + int(m.group(2) or 0)
    files = None if m.group(2) else relative(shown, dt.table_uri)
    return dict(version=version, **{k: r[k] for k in ("rows", "distinct_offsets", "distinct_ids", "id_min", "id_max")},
                partition_columns=list(dt.metadata().partition_columns), files=files, files_scanned=scanned,
                columns={k: str(v) for k, v in schema.items()})


SPARK_WAIT_S = 120
_spark_port = None


def spark_call(port, request, timeout):
    """One request to the Spark server: one JSON line out, one JSON line back."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(timeout)
        s.sendall((json.dumps(request) + "\n").encode())
        line = s.makefile("rb").readline()
    if not line:
        raise RuntimeError(f"the Spark server on port {port} closed the connection without an answer")
    return json.loads(line)


def spark_port():
    """The Spark server's port, from the file $SLUICE_TEST_SPARK names, once it answers a ping."""
    global _spark_port
    if _spark_port is not None:
        return _spark_port
    port_file = os.environ.get("SLUICE_TEST_SPARK")
    if not port_file:
        raise RuntimeError("SLUICE_TEST_SPARK is not set: start tests/support/spark_server.py PORT_FILE "
                           "(run-tests.sh does) and export SLUICE_TEST_SPARK=PORT_FILE")
    deadline, last = time.time() + SPARK_WAIT_S, "no port file yet"
    while True:
        if os.path.exists(port_file + ".error"):
            with open(port_file + ".error") as f:
                raise RuntimeError(f"the Spark server did not start: {f.read().strip()}")
        try:
            with open(port_file) as f:
                port = int(f.read())
            if spark_call(port, {"ping": True}, timeout=30).get("ok"):
                _spark_port = port
                return port
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.time() > deadline:
            raise RuntimeError(f"no Spark server answered within {SPARK_WAIT_S} s ({port_file}: {last})")
        time.sleep(0.5)


def spark_request(request):
    """A read by the Spark server; its {"error"} answers raise."""
    response = spark_call(spark_port(), request, timeout=900)
    if "error" in response:
        raise RuntimeError(f"Spark: {response['error']}")
    return response


def read_spark(a, so):
    if so is not None:
        return {"unsupported": "s3", "reason": "the test Spark has no S3 connector (hadoop-aws) installed"}
    r = spark_request({"format": "delta", "table": local_path(a.table), "version": a.version, "where": a.where})
    r.pop("engine", None)
    return r


ENGINES = {"deltalake": read_deltalake, "duckdb": read_duckdb, "polars": read_polars, "spark": read_spark}


def canonical(v):
    """One JSON form for a value, whichever engine returned it."""
    import datetime
    import decimal
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.isoformat(timespec="microseconds")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: canonical(x) for k, x in v.items()}
    if isinstance(v, list):
        # a map: pyarrow gives [(key, value)], polars [{"key": k, "value": v}]
        if v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
            return {str(k): canonical(x) for k, x in v}
        if v and all(isinstance(x, dict) and set(x) == {"key", "value"} for x in v):
            return {str(x["key"]): canonical(x["value"]) for x in v}
        return [canonical(x) for x in v]
    return v


def read_rows(a, so):
    """Every row of the table as the engine returns it, in canonical form."""
    if a.engine == "deltalake":
        from deltalake import DeltaTable
        dt = DeltaTable(a.table, version=a.version, storage_options=so)
        version, table = dt.version(), dt.to_pyarrow_table()
    elif a.engine == "duckdb":
        if so is not None:
            return {"unsupported": "s3"}
        con, root, version = duckdb_snapshot(a)
        table = con.execute(f"SELECT * FROM delta_scan({sql_str(root)}, version={int(version)})").fetch_arrow_table()
    elif a.engine == "spark":
        if so is not None:
            return {"unsupported": "s3"}
        # every row, as the other engines read them (--where is not applied to --rows): canonical already
        r = spark_request({"format": "delta", "table": local_path(a.table), "version": a.version, "rows": True})
        return dict(version=r["version"], rows=r["rows"])
    else:
        import polars as pl
        from deltalake import DeltaTable
        version = DeltaTable(a.table, version=a.version, storage_options=so).version()
        table = pl.scan_delta(a.table, version=version, storage_options=so).collect().to_arrow()
    rows = sorted(table.to_pylist(), key=lambda r: (r["_partition"], r["_offset"]))
    return dict(version=version, rows=[canonical(r) for r in rows])


def read_once(a, so):
    result = {"engine": a.engine, **(read_rows(a, so) if a.rows else ENGINES[a.engine](a, so))}
    print(json.dumps(result), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="local path, file://… or s3://bucket/prefix")
    ap.add_argument("--engine", required=True, choices=sorted(ENGINES))
    ap.add_argument("--version", type=int, help="read this table version (time travel)")
    ap.add_argument("--where", help="SQL predicate over partition columns, e.g. \"date = '2026-11-25' AND hour = 13\"")
    ap.add_argument("--s3-endpoint", help="S3 endpoint (e.g. a moto server) for s3:// tables")
    ap.add_argument("--rows", action="store_true", help="print every row, canonical, instead of the counts")
    ap.add_argument("--loop-until", metavar="FILE", help="read repeatedly until FILE exists, then once more")
    a = ap.parse_args()
    so = storage_options(a)
    try:
        if a.loop_until:
            while not os.path.exists(a.loop_until):
                read_once(a, so)
                time.sleep(0.2)
        read_once(a, so)
    except Exception as e:  # never print a result we did not read
        print(f"delta_reader: {a.engine} failed reading {a.table}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    # The result is printed and flushed: skip the interpreter's teardown. A reader once died in
    # CI with "terminate called without an active exception" (a C++ abort in a native library;
    # not reproduced in 60 runs, where in the process it happened is unknown); an abort while
    # native thread pools are torn down can no longer fail a test that has its answer.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
