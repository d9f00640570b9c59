#!/usr/bin/env python3
"""One long-lived Apache Spark session (pyspark 4.0 with Delta Lake 4.0 and Apache Iceberg 1.10) that
reads tables for the tests, so that they pay Spark's start (~6 s, ~1 GB) once per run, not per read.

    spark_server.py [--jars DIR] [--parent-pid PID] [--process-group] PORT_FILE

It starts Spark (local[2], driver memory 1g, UI off, the jars of .tools/spark-jars only, an empty Ivy
folder: nothing is downloaded) on Java 17 (JAVA_HOME if it is a Java 17, else `java` on PATH if it is
one, else /usr/lib/jvm/*17*; Spark 4.0 fails on Java 25), listens on 127.0.0.1 (a free port) and, once
the session is up, writes the port to PORT_FILE (atomically: written beside it, then renamed). If it
cannot start it writes the reason to PORT_FILE.error instead, so that clients fail at once.

Protocol: newline-delimited JSON over TCP, one request line -> one response line; a connection may send
several requests and several connections may come and go over the server's life (one read at a time).

  {"ping": true} -> {"ok": true, "spark": "4.0.1", "java": "17.0.15", "jvm_pid": N}
  {"format": "delta" | "iceberg",
   "table": "/abs/path",        Delta: the table root. Iceberg: the table root (its metadata/ holds
                                vN.metadata.json and version-hint.text) or a metadata.json file
   "version": N,                Delta: read this version (versionAsOf); optional
   "snapshot_id": N,            Iceberg: read this snapshot (snapshot-id); optional
   "where": "SQL predicate",    optional
   "rows": true,                optional: every row (under "where") instead of the counts
   "rename_reserved": true}     Iceberg, optional: see below
  -> the object tests/delta_reader.py prints: engine "spark", version (Delta: the version read; Iceberg:
     the snapshot id read, null for a table without snapshots), rows, distinct_offsets (distinct
     (_topic, _partition, _offset)), distinct_ids / id_min / id_max (event_id "evt-000123" -> 123; null
     without an event_id column), partition_columns (Delta: the partition columns; Iceberg: the field
     names of the table's partition spec), files (the data files the scan reads under "where", relative
     to the table root, sorted), files_scanned, columns (name -> Spark type), plan (the executed plan of
     the scan under "where"); or with "rows": {"engine", "version", "rows": [canonical rows ordered by
     (_partition, _offset), as delta_reader.py --rows prints them]}. Where a table has _kafka_partition
     (sluice's Iceberg name for the Kafka partition) it stands for _partition.
  Any failure -> {"error": "..."}; the server stays up.

The latest version / snapshot is pinned first (Delta: DESCRIBE HISTORY; Iceberg: the table's current
snapshot) and every query of one request reads that one snapshot.

Iceberg reserves column names for its metadata columns (_file, _pos, _deleted, _spec_id, _partition,
_row_id, _last_updated_sequence_number): Spark's Iceberg scan refuses to read a table column with one of
these names ("Table column names conflict with names reserved for Iceberg metadata columns"). With
"rename_reserved": true such columns are renamed (suffix RESERVED_SUFFIX) in a private copy of the
table's metadata.json (same data files, read by field id), read, and renamed back; the response then
lists them in "renamed_reserved". Without it the read fails as it would for any Spark user.

Options: --jars (default .tools/spark-jars); --parent-pid PID: exit when that process is gone;
--process-group: run in a process group of its own (with the JVM), so that a caller can end both.
SIGTERM / SIGINT stop Spark and exit.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from urllib.parse import unquote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the canonical row form of delta_reader.py
from delta_reader import canonical  # noqa: E402

JAVA_MAJOR = 17
RESERVED_SUFFIX = "__sluice_reserved"


def offset_cols(names):
    """The columns that identify a record: _topic, the Kafka partition and _offset (the Kafka partition
    is _kafka_partition in sluice's Iceberg schema: Iceberg reserves _partition)."""
    return ("_topic", "_kafka_partition" if "_kafka_partition" in names else "_partition", "_offset")


def log(msg):
    print(f"spark_server: {msg}", file=sys.stderr, flush=True)


def java_major(java):
    """The major version of a java binary (17 for "17.0.15", 8 for "1.8.0"), or None."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java_home():
    """A Java 17 home: JAVA_HOME if it is one, else `java` on PATH if it is one, else /usr/lib/jvm/*17*."""
    seen = []
    home = os.environ.get("JAVA_HOME")
    if home:
        v = java_major(os.path.join(home, "bin", "java"))
        if v == JAVA_MAJOR:
            return home
        seen.append(f"JAVA_HOME={home} (Java {v})")
    on_path = shutil.which("java")
    if on_path:
        v = java_major(on_path)
        if v == JAVA_MAJOR:
            return os.path.dirname(os.path.dirname(os.path.realpath(on_path)))
        seen.append(f"java on PATH {on_path} (Java {v})")
    for home in sorted(glob.glob(f"/usr/lib/jvm/*{JAVA_MAJOR}*")):
        if java_major(os.path.join(home, "bin", "java")) == JAVA_MAJOR:
            return home
    raise SystemExit(f"spark_server: Spark 4.0 needs a Java {JAVA_MAJOR} (Java 25 fails at start); none found: "
                     f"{'; '.join(seen) or 'no JAVA_HOME, no java on PATH'}, none in /usr/lib/jvm/*{JAVA_MAJOR}*. "
                     f"Install one (Debian: apt-get install openjdk-{JAVA_MAJOR}-jdk-headless) or set JAVA_HOME to it.")


def start_spark(jars_dir, work):
    jars = sorted(glob.glob(os.path.join(jars_dir, "*.jar")))
    if not jars:
        raise SystemExit(f"spark_server: no jars in {jars_dir}: run tests/support/tools.sh")
    os.environ["JAVA_HOME"] = find_java_home()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    for d in ("ivy", "local", "warehouse"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder
             .master("local[2]").appName("sluice-test-readers")
             .config("spark.jars", ",".join(jars))                        # local jars only
             .config("spark.jars.ivy", os.path.join(work, "ivy"))        # empty: nothing to resolve
             .config("spark.driver.memory", "1g")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.local.dir", os.path.join(work, "local"))
             .config("spark.sql.warehouse.dir", os.path.join(work, "warehouse"))
             .config("spark.sql.catalogImplementation", "in-memory")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.databricks.delta.snapshotPartitions", "2")  # log replay: 2 tasks, not 50
             .config("spark.sql.extensions",
                     "io.delta.sql.DeltaSparkSessionExtension,"
                     "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
             .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def local(path):
    """A local path from a path or a file: URI as Spark and Iceberg print them."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    return path


def relative(paths, root, decode):
    root = local(root).rstrip("/") + "/"
    out = []
    for p in paths:
        p = local(p)
        if decode:
            p = unquote(p)
        if not p.startswith(root):
            raise RuntimeError(f"data file {p} is outside the table root {root}")
        out.append(p[len(root):])
    return sorted(out)


def quote_ident(name):
    return "`" + name.replace("`", "``") + "`"


class Reader:
    def __init__(self, spark, work):
        self.spark = spark
        self.work = work
        self.jvm = spark._jvm
        self.lock = threading.Lock()
        self.seq = 0

    def seq_of(self, scala_seq):
        return list(self.jvm.scala.jdk.javaapi.CollectionConverters.asJava(scala_seq))

    def ping(self):
        return {"ok": True, "spark": self.spark.version,
                "java": self.jvm.java.lang.System.getProperty("java.version"),
                "jvm_pid": self.jvm.java.lang.ProcessHandle.current().pid()}

    def serve(self, req):
        if not isinstance(req, dict):
            raise ValueError("a request is a JSON object")
        if req.get("ping"):
            with self.lock:
                return self.ping()
        fmt, table = req.get("format"), req.get("table")
        if fmt not in ("delta", "iceberg"):
            raise ValueError(f"format must be \"delta\" or \"iceberg\", not {fmt!r}")
        if not isinstance(table, str) or not table:
            raise ValueError("table: a path is needed")
        if table.startswith(("s3://", "s3a://", "abfss://", "az://", "gs://")):
            raise ValueError("this Spark reads local tables only (no object-store connectors)")
        table = os.path.abspath(local(table))
        with self.lock:
            if fmt == "delta":
                df, version, parts, root, decode = self.delta(table, req.get("version"))
                renamed = None
            else:
                df, version, parts, root, decode, renamed = self.iceberg(
                    table, req.get("snapshot_id"), bool(req.get("rename_reserved")))
            where = req.get("where")
            out = {"engine": "spark", "version": version}
            if req.get("rows"):
                out |= self.rows(df, where)
            else:
                out |= self.counts(df, where, parts, root, decode, fmt)
            if renamed:
                out["renamed_reserved"] = renamed
            return out

    def delta(self, path, version):
        if version is None:
            hist = self.spark.sql(f"DESCRIBE HISTORY delta.{quote_ident(path)} LIMIT 1").collect()
            if not hist:
                raise RuntimeError(f"no Delta history at {path}")
            version = int(hist[0]["version"])
        df = self.spark.read.format("delta").option("versionAsOf", int(version)).load(path)
        parts = []
        for leaf in self.seq_of(df._jdf.queryExecution().optimizedPlan().collectLeaves()):
            if leaf.getClass().getSimpleName() == "LogicalRelation":
                parts = list(leaf.relation().partitionSchema().fieldNames())
        return df, int(version), parts, path, True

    def iceberg(self, path, snapshot_id, rename_reserved):
        tables = self.jvm.org.apache.iceberg.hadoop.HadoopTables(self.spark._jsc.hadoopConfiguration())
        t = tables.load(path)  # a table root (version-hint.text or vN.metadata.json) or a metadata file
        if snapshot_id is None:
            cur = t.currentSnapshot()
            snapshot_id = None if cur is None else int(cur.snapshotId())
        else:
            snapshot_id = int(snapshot_id)
            if t.snapshot(self.jvm.java.lang.Long.valueOf(str(snapshot_id))) is None:
                raise ValueError(f"no snapshot {snapshot_id} in the Iceberg table at {path}")
        parts = [f.name() for f in t.spec().fields()]
        root = t.location()
        source, renamed = path, []
        if rename_reserved:
            source, renamed = self.renamed_metadata(t)
        reader = self.spark.read.format("iceberg")
        if snapshot_id is not None:
            reader = reader.option("snapshot-id", str(snapshot_id))
        df = reader.load(source)
        for name in renamed:
            df = df.withColumnRenamed(name + RESERVED_SUFFIX, name)
        return df, snapshot_id, parts, root, False, renamed

    def renamed_metadata(self, t):
        """A private copy of the table's current metadata.json whose top-level columns named like Iceberg
        metadata columns are renamed; (its path, the renamed names) or (the table's metadata file, [])."""
        reserved = self.jvm.org.apache.iceberg.MetadataColumns
        meta_file = t.operations().current().metadataFileLocation()
        with open(local(meta_file)) as f:
            meta = json.load(f)
        renamed = set()
        for schema in meta.get("schemas", []) + ([meta["schema"]] if "schema" in meta else []):
            for field in schema.get("fields", []):
                if reserved.isMetadataColumn(field["name"]):
                    renamed.add(field["name"])
                    field["name"] += RESERVED_SUFFIX
        if not renamed:
            return meta_file, []
        self.seq += 1
        d = os.path.join(self.work, "renamed", str(self.seq))
        os.makedirs(d)
        copy = os.path.join(d, "v1.metadata.json")
        with open(copy, "w") as f:
            json.dump(meta, f)
        return copy, sorted(renamed)

    def counts(self, df, where, parts, root, decode, fmt):
        cols = set(df.columns)
        view = f"sluice_t{self.seq}"
        self.seq += 1
        df.createOrReplaceTempView(view)
        try:
            w = f"WHERE {where}" if where else ""
            ids = ("count(DISTINCT event_id), min(CAST(substr(event_id, 5) AS BIGINT)), "
                   "max(CAST(substr(event_id, 5) AS BIGINT))" if "event_id" in cols
                   else "NULL, NULL, NULL")
            rows, distinct_ids, id_min, id_max = self.spark.sql(f"SELECT count(*), {ids} FROM {view} {w}").first()
            offs = ", ".join(quote_ident(c) for c in offset_cols(cols))
            (distinct_offsets,) = self.spark.sql(
                f"SELECT count(*) FROM (SELECT DISTINCT {offs} FROM {view} {w}) d").first()
            scan = self.spark.sql(f"SELECT * FROM {view} {w}")
            qe = scan._jdf.queryExecution()
            plan = qe.executedPlan().toString()
            if fmt == "delta":
                paths = list(scan._jdf.inputFiles())
            else:  # DataFrame.inputFiles() is empty for Iceberg (a DSv2 scan): its planned tasks
                paths = set()
                for leaf in self.seq_of(qe.executedPlan().collectLeaves()):
                    if leaf.getClass().getSimpleName() == "BatchScanExec":
                        for part in self.seq_of(leaf.inputPartitions()):
                            for task in part.taskGroup().tasks().toArray():
                                paths.add(task.file().location())
        finally:
            self.spark.catalog.dropTempView(view)
        files = relative(paths, root, decode)
        return dict(rows=rows, distinct_offsets=distinct_offsets, distinct_ids=distinct_ids,
                    id_min=id_min, id_max=id_max, partition_columns=parts, files=files,
                    files_scanned=len(files),
                    columns={f.name: f.dataType.simpleString() for f in df.schema.fields}, plan=plan)

    def rows(self, df, where):
        if where:
            df = df.where(where)
        # Every field nullable first: a null struct whose field is required (an optional record
        # with a required field) is null in each of its fields too, which pyarrow refuses to
        # view as non-nullable when Spark hands over its Arrow batches.
        table = df.to(nullable(df.schema)).toArrow()
        _, part, _ = offset_cols(table.column_names)
        rows = sorted(table.to_pylist(), key=lambda r: (r[part], r["_offset"]))
        return {"rows": [canonical(r) for r in rows]}


def nullable(dt):
    """`dt` with every struct field, list element and map value nullable."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType
    if isinstance(dt, StructType):
        return StructType([StructField(f.name, nullable(f.dataType), True, f.metadata) for f in dt.fields])
    if isinstance(dt, ArrayType):
        return ArrayType(nullable(dt.elementType), True)
    if isinstance(dt, MapType):
        return MapType(nullable(dt.keyType), nullable(dt.valueType), True)
    return dt


def error_text(e):
    java = getattr(e, "java_exception", None)
    text = java.toString() if java is not None else f"{type(e).__name__}: {e}"
    return text if len(text) <= 4000 else text[:4000] + " …"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if not line.strip():
                continue
            t0 = time.time()
            try:
                req = json.loads(line)
                resp = self.server.reader.serve(req)
            except Exception as e:  # noqa: BLE001 - every failure is an answer; the server stays up
                traceback.print_exc(file=sys.stderr)
                req, resp = None, {"error": error_text(e)}
            if not (isinstance(req, dict) and req.get("ping")):
                log(f"{line.strip()[:300].decode(errors='replace')} -> "
                    f"{'error' if 'error' in resp else 'ok'} in {time.time() - t0:.2f} s")
            try:
                self.wfile.write((json.dumps(resp) + "\n").encode())
                self.wfile.flush()
            except OSError:
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("port_file")
    ap.add_argument("--jars", default=os.path.join(ROOT, ".tools", "spark-jars"))
    ap.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    ap.add_argument("--process-group", action="store_true", help="lead a process group of its own")
    a = ap.parse_args()
    if a.process_group and os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)
    port_file = os.path.abspath(a.port_file)
    for stale in (port_file, port_file + ".error"):
        if os.path.exists(stale):
            os.remove(stale)
    work = tempfile.mkdtemp(prefix="sluice-spark-")
    stop = threading.Event()
    server = None

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping")
        stop.set()
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()
        else:
            raise SystemExit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    spark = None
    try:
        t0 = time.time()
        try:
            spark = start_spark(a.jars, work)
            reader = Reader(spark, work)
            spark.range(1).count()  # the first query pays for code loading: not a test's read
            info = reader.ping()
            # pyspark's SparkContext replaces the SIGINT handler (it cancels jobs): ours again
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        except BaseException as e:
            with open(port_file + ".error.tmp", "w") as f:
                f.write(str(e) if isinstance(e, SystemExit) else error_text(e))
            os.replace(port_file + ".error.tmp", port_file + ".error")
            raise
        server = Server(("127.0.0.1", 0), Handler)
        server.reader = reader
        port = server.server_address[1]
        with open(port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(port_file + ".tmp", port_file)
        log(f"Spark {info['spark']} on Java {info['java']} (JVM pid {info['jvm_pid']}) up in "
            f"{time.time() - t0:.1f} s; listening on 127.0.0.1:{port}")
        if a.parent_pid:
            def watch():
                while not stop.wait(1):
                    try:
                        os.kill(a.parent_pid, 0)
                    except ProcessLookupError:
                        log(f"parent {a.parent_pid} is gone: stopping")
                        stop.set()
                        server.shutdown()
            threading.Thread(target=watch, daemon=True).start()
        if not stop.is_set():
            server.serve_forever(poll_interval=0.5)
    finally:
        if server is not None:
            server.server_close()
        if os.path.exists(port_file):
            os.remove(port_file)
        if spark is not None:
            try:
                spark.stop()
            except Exception as e:  # noqa: BLE001 - the JVM may be gone already
                log(f"stopping Spark: {error_text(e)}")
        shutil.rmtree(work, ignore_errors=True)
        log("stopped")


if __name__ == "__main__":
    main()
