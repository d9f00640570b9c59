#!/usr/bin/env python3
"""An independent reader of an Apache Iceberg table, as an analyst would read it, with three engines.

    iceberg_reader.py --table ROOT_OR_METADATA_JSON --engine {pyiceberg,duckdb,spark} [--snapshot ID]
                      [--where SQL_PREDICATE] [--rows] [--loop-until FILE] [--s3-endpoint http://127.0.0.1:PORT]
                      [--spark-rename-reserved]
    iceberg_reader.py --catalog {sql:SQLALCHEMY_URI,rest:URL} [--catalog-name NAME] --table NAMESPACE.TABLE
                      --engine pyiceberg [the options above] | [--metadata-location]

--table is the table root (a local path, file://… or s3://bucket/prefix) whose metadata/ holds
vN.metadata.json and version-hint.text, or one metadata.json file. Each read loads one snapshot of the table
(the current one, or --snapshot ID), runs the counts on it and prints one JSON object on stdout, the shape
delta_reader.py prints: engine, version (the snapshot id read; null for a table without snapshots), rows,
distinct_offsets (distinct (_topic, _partition, _offset); _kafka_partition instead of _partition where the table
has it: sluice's Iceberg name for the Kafka partition, as Iceberg reserves _partition), distinct_ids / id_min / id_max (over event_id
"evt-000123" -> 123; null without an event_id column), partition_columns (the field names of the table's
default partition spec: an identity field is named after its column, e.g. "date"; hour(ts) is "ts_hour"),
files (the data files the engine reads under --where, relative to the table's location, sorted),
files_scanned and columns (name -> type as the engine sees it).

- pyiceberg: StaticTable.from_metadata (a root needs metadata/version-hint.text); --where is a pyiceberg
  row_filter string ("date = '2026-11-24' AND hour = 10"); files from the scan's plan_files(), the rows from
  its to_arrow(), counted with pyarrow; columns are Iceberg types. s3:// through pyarrow's S3 with
  --s3-endpoint (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else "test").
- duckdb: the iceberg extension (and the avro extension it reads manifests with) loaded from the
  duckdb_extension_iceberg / duckdb_extension_avro wheels' files, never downloaded; iceberg_scan(root) (it
  follows version-hint.text) pinned with snapshot_from_id to the current snapshot of the metadata file the
  hint names; files are the data files DuckDB's FileSystem log shows it opened. Local tables only: an s3://
  table prints {"engine": "duckdb", "unsupported": "s3", ...} and exits 0.
- spark: Apache Spark with Iceberg 1.10, through the test run's one Spark session
  (tests/support/spark_server.py; its port file named by $SLUICE_TEST_SPARK); files from the scan's planned
  tasks; the result also has "plan". Spark refuses to read a column named like an Iceberg metadata column
  (_partition, _file, _pos, …): --spark-rename-reserved reads such columns through a renamed copy of the
  metadata instead (the result then lists them in "renamed_reserved"). Local tables only, like duckdb.

--catalog reads the table NAMESPACE.TABLE (--table) through a catalog instead of from its files, with pyiceberg
(pyiceberg.catalog.load_catalog; other engines are refused): sql:URI is pyiceberg's SqlCatalog on that SQLAlchemy
URI (sqlite:////path/catalog.db, postgresql+psycopg2://user@127.0.0.1:PORT/db; it never creates the catalog's
tables), whose rows are those of the catalog named --catalog-name (default sluice: the catalog_name column);
rest:URL is an Iceberg REST catalog (http://127.0.0.1:PORT). The reads are those of a metadata file: the same
counts, --snapshot, --where, --rows and --loop-until (each read loads the table from the catalog anew). With
--metadata-location it prints only the table's current metadata location as the catalog has it (one line,
the location as written, e.g. file:///…/00002-<uuid>.metadata.json) and exits.

--rows prints instead {"engine", "version", "rows": [every row (under --where), ordered by (_partition, _offset)
(or _kafka_partition), in delta_reader.py's canonical JSON form, with the table's column names]}, so rows read by different engines can be compared value for value.

--loop-until FILE repeats reads (each of the then current snapshot) until FILE exists, then reads once more.
Any reader error exits non-zero with a message on stderr.
"""
import argparse
import glob
import json
import os
import sys
import time
from urllib.parse import unquote, urlparse

import pyarrow as pa

from delta_reader import canonical, spark_request, sql_counts, sql_str


def offset_cols(names):
    """The columns that identify a record: _topic, the Kafka partition and _offset. Iceberg reserves
    _partition (Spark refuses to read such a column): sluice's Iceberg schema calls it _kafka_partition."""
    return ("_topic", "_kafka_partition" if "_kafka_partition" in names else "_partition", "_offset")


def s3_properties(a):
    if a.catalog and not a.s3_endpoint:
        return {}
    if not a.catalog and not a.table.startswith("s3://"):
        return {}
    if not a.s3_endpoint:
        raise SystemExit("iceberg_reader: an s3:// table needs --s3-endpoint")
    props = {"s3.endpoint": a.s3_endpoint,
             "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID") or "test",
             "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY") or "test",
             "s3.region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
             "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if os.environ.get("AWS_SESSION_TOKEN"):
        props["s3.session-token"] = os.environ["AWS_SESSION_TOKEN"]
    return props


def local_path(table):
    return unquote(urlparse(table).path) if table.startswith("file://") else os.path.abspath(table)


def strip_file_scheme(p):
    if p.startswith("file://"):
        return p[len("file://"):]
    return p[len("file:"):] if p.startswith("file:") else p


def relative(paths, location):
    """Data file paths relative to the table's location (a local path, file:… or s3://…). Iceberg paths
    are not URL-encoded: no decoding."""
    root = strip_file_scheme(location).rstrip("/") + "/"
    out = []
    for p in paths:
        p = strip_file_scheme(p)
        if not p.startswith(root):
            raise RuntimeError(f"data file {p} is outside the table location {root}")
        out.append(p[len(root):])
    return sorted(out)


def arrow_counts(table):
    """The counts over a pyarrow table: pyarrow compute, no SQL engine."""
    import pyarrow.compute as pc
    keys = list(offset_cols(table.column_names))
    r = dict(rows=table.num_rows,
             distinct_offsets=table.select(keys).group_by(keys).aggregate([]).num_rows,
             distinct_ids=None, id_min=None, id_max=None)
    if "event_id" in table.column_names:
        ev = table["event_id"]
        n = pc.cast(pc.utf8_slice_codeunits(ev, 4), pa.int64())
        r.update(distinct_ids=pc.count_distinct(ev, mode="only_valid").as_py(),
                 id_min=pc.min(n).as_py(), id_max=pc.max(n).as_py())
    return r


def load_catalog(a):
    """The catalog of --catalog (sql:URI or rest:URL) through pyiceberg.catalog.load_catalog."""
    from pyiceberg.catalog import load_catalog as load
    kind, _, target = a.catalog.partition(":")
    props = dict(s3_properties(a))
    if kind == "sql":
        # A reader: never create the catalog's tables in someone else's database.
        props.update(type="sql", uri=target, init_catalog_tables="false")
    elif kind == "rest":
        props.update(type="rest", uri=target)
    else:
        raise ValueError(f"--catalog {a.catalog!r}: expected sql:SQLALCHEMY_URI or rest:URL")
    return load(a.catalog_name, **props)


def load_table(a):
    """The table of --table: through the catalog of --catalog, else from its metadata file."""
    if a.catalog:
        return load_catalog(a).load_table(a.table)
    from pyiceberg.table import StaticTable
    location = a.table if a.table.startswith("s3://") else local_path(a.table)
    return StaticTable.from_metadata(location, properties=s3_properties(a))


def pyiceberg_scan(a):
    from pyiceberg.expressions import AlwaysTrue
    tbl = load_table(a)
    if a.snapshot is not None:
        snap = tbl.snapshot_by_id(a.snapshot)
        if snap is None:
            raise RuntimeError(f"no snapshot {a.snapshot} in {a.table}")
    else:
        snap = tbl.current_snapshot()
    snapshot_id = snap.snapshot_id if snap is not None else None
    scan = tbl.scan(row_filter=a.where or AlwaysTrue(), snapshot_id=snapshot_id)
    return tbl, snapshot_id, scan


def read_pyiceberg(a):
    tbl, snapshot_id, scan = pyiceberg_scan(a)
    files = relative([task.file.file_path for task in scan.plan_files()], tbl.metadata.location)
    r = arrow_counts(scan.to_arrow())
    return dict(version=snapshot_id, **r, partition_columns=[f.name for f in tbl.spec().fields],
                files=files, files_scanned=len(files),
                columns={f.name: str(f.field_type) for f in scan.projection().fields})


def metadata_file(table):
    """The metadata file a local table root's version-hint.text names (DuckDB's rule: vN.metadata.json
    for a number, else <hint>.metadata.json or the hint itself), or the metadata file given."""
    if os.path.isfile(table):
        return table
    hint_file = os.path.join(table, "metadata", "version-hint.text")
    if not os.path.exists(hint_file):
        raise RuntimeError(f"no metadata/version-hint.text under {table}: pass the metadata.json file")
    with open(hint_file) as f:
        hint = f.read().strip()
    for name in ([f"v{hint}.metadata.json"] if hint.isdigit() else []) + [f"{hint}.metadata.json", hint]:
        path = os.path.join(table, "metadata", name)
        if os.path.isfile(path):
            return path
    raise RuntimeError(f"{hint_file} says {hint!r}, but there is no such metadata file")


def duckdb_extension(module, name):
    found = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*", f"{name}.duckdb_extension"))
    if len(found) != 1:
        raise RuntimeError(f"expected one {name}.duckdb_extension in the {module.__name__} package, found {found}")
    return found[0]


def duckdb_snapshot(a):
    """A DuckDB connection with the iceberg extension, the scan's source (pinned to one snapshot), the
    table's metadata (current snapshot's metadata file) and the snapshot id."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_iceberg
    table = local_path(a.table)
    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    con.execute(f"LOAD {sql_str(duckdb_extension(duckdb_extension_avro, 'avro'))}")
    con.execute(f"LOAD {sql_str(duckdb_extension(duckdb_extension_iceberg, 'iceberg'))}")
    with open(metadata_file(table)) as f:
        meta = json.load(f)
    snapshot_id = a.snapshot
    if snapshot_id is None:
        snapshot_id = meta.get("current-snapshot-id")
        if snapshot_id is not None and snapshot_id < 0:  # -1: no snapshot (format v1)
            snapshot_id = None
    args = sql_str(table) + (f", snapshot_from_id={int(snapshot_id)}" if snapshot_id is not None else "")
    return con, args, meta, snapshot_id


def read_duckdb(a):
    if a.table.startswith("s3://"):
        return {"unsupported": "s3", "reason": "DuckDB reads S3 through httpfs, which the tests do not install"}
    con, args, meta, snapshot_id = duckdb_snapshot(a)
    src = f"iceberg_scan({args})"
    columns = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall())
    con.execute(f"CREATE VIEW t AS SELECT * FROM {src}")
    data_files = {strip_file_scheme(p) for (p,) in con.execute(
        f"SELECT file_path FROM iceberg_metadata({args}) WHERE manifest_content = 'DATA'").fetchall()}
    con.execute("CALL enable_logging('FileSystem')")
    r = sql_counts(lambda sql: con.execute(sql).fetchone(), "event_id" in columns, a.where, offset_cols(columns))
    opened = set()
    for (m,) in con.execute("SELECT message FROM duckdb_logs WHERE type = 'FileSystem'").fetchall():
        entry = json.loads(m)
        if entry.get("op") == "OPEN":
            opened.add(strip_file_scheme(entry["path"]))
    files = relative(opened & data_files, meta["location"])
    specs = {s["spec-id"]: s for s in meta.get("partition-specs", [])}
    spec = specs.get(meta.get("default-spec-id"), {"fields": meta.get("partition-spec", [])})
    return dict(version=snapshot_id, **r, partition_columns=[f["name"] for f in spec["fields"]],
                files=files, files_scanned=len(files), columns=columns)


def read_spark(a):
    if a.table.startswith("s3://"):
        return {"unsupported": "s3", "reason": "the test Spark has no S3 connector (hadoop-aws) installed"}
    r = spark_request({"format": "iceberg", "table": local_path(a.table), "snapshot_id": a.snapshot,
                       "where": a.where, "rename_reserved": a.spark_rename_reserved})
    r.pop("engine", None)
    return r


ENGINES = {"pyiceberg": read_pyiceberg, "duckdb": read_duckdb, "spark": read_spark}


def read_rows(a):
    """Every row of the snapshot (under --where) as the engine returns it, in canonical form."""
    if a.engine == "pyiceberg":
        _, snapshot_id, scan = pyiceberg_scan(a)
        table = scan.to_arrow()
    elif a.engine == "duckdb":
        if a.table.startswith("s3://"):
            return {"unsupported": "s3"}
        con, args, _, snapshot_id = duckdb_snapshot(a)
        w = f"WHERE {a.where}" if a.where else ""
        table = con.execute(f"SELECT * FROM iceberg_scan({args}) {w}").to_arrow_table()
    else:
        if a.table.startswith("s3://"):
            return {"unsupported": "s3"}
        r = spark_request({"format": "iceberg", "table": local_path(a.table), "snapshot_id": a.snapshot,
                           "where": a.where, "rows": True, "rename_reserved": a.spark_rename_reserved})
        r.pop("engine", None)
        return r
    _, part, _ = offset_cols(table.column_names)
    rows = sorted(table.to_pylist(), key=lambda r: (r[part], r["_offset"]))
    return dict(version=snapshot_id, rows=[canonical(r) for r in rows])


def read_once(a):
    result = {"engine": a.engine, **(read_rows(a) if a.rows else ENGINES[a.engine](a))}
    print(json.dumps(result), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True,
                    help="table root (local path, file://… or s3://bucket/prefix) or its metadata.json file; "
                         "with --catalog, NAMESPACE.TABLE")
    ap.add_argument("--engine", required=True, choices=sorted(ENGINES))
    ap.add_argument("--snapshot", type=int, help="read this snapshot id (time travel)")
    ap.add_argument("--where", help="predicate, e.g. \"date = '2026-11-25' AND hour = 13\"")
    ap.add_argument("--s3-endpoint", help="S3 endpoint (e.g. a moto server) for s3:// tables")
    ap.add_argument("--rows", action="store_true", help="print every row, canonical, instead of the counts")
    ap.add_argument("--loop-until", metavar="FILE", help="read repeatedly until FILE exists, then once more")
    ap.add_argument("--spark-rename-reserved", action="store_true",
                    help="spark: read columns named like Iceberg metadata columns (_partition, …) renamed")
    ap.add_argument("--catalog", metavar="sql:URI|rest:URL",
                    help="read --table (NAMESPACE.TABLE) through this catalog (pyiceberg only)")
    ap.add_argument("--catalog-name", default="sluice",
                    help="the catalog's name (the catalog_name of a SQL catalog's rows; default sluice)")
    ap.add_argument("--metadata-location", action="store_true",
                    help="with --catalog: print the table's current metadata location and exit")
    a = ap.parse_args()
    if a.catalog:
        if a.engine != "pyiceberg":
            ap.error(f"--catalog reads with pyiceberg only, not {a.engine}")
        if not a.catalog.startswith(("sql:", "rest:")):
            ap.error("--catalog takes sql:SQLALCHEMY_URI or rest:URL")
    elif a.metadata_location:
        ap.error("--metadata-location needs --catalog")
    if a.table.startswith("s3://"):
        s3_properties(a)  # --s3-endpoint is required
    try:
        if a.metadata_location:
            print(load_table(a).metadata_location, flush=True)
            sys.stdout.flush()
            os._exit(0)
        if a.loop_until:
            while not os.path.exists(a.loop_until):
                read_once(a)
                time.sleep(0.2)
        read_once(a)
    except Exception as e:  # never print a result we did not read
        print(f"iceberg_reader: {a.engine} failed reading {a.table}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    # As delta_reader.py: the result is printed and flushed; skip the teardown of native thread pools.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
