#!/usr/bin/env python3
"""An independent reader of a sluice table, as an analyst would read it.

It asks `sluice files` for the committed data and dead-letter files, then reads them with DuckDB
and cross-checks the row count with pyarrow's Parquet footers. Prints one JSON report.
"""
import argparse
import json
import subprocess
import sys
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow.parquet as pq


def local_paths(sluice, job, *extra):
    out = subprocess.run([sluice, "files", "--job", job, *extra], check=True,
                         capture_output=True, text=True).stdout.split()
    paths = []
    for url in out:
        u = urlparse(url)
        if u.scheme != "file":
            sys.exit(f"reader: only file:// tables are supported here, got {url}")
        paths.append(unquote(u.path))
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--job", required=True)
    a = ap.parse_args()
    files = local_paths(a.sluice, a.job)
    dead = local_paths(a.sluice, a.job, "--dead-letters")
    con = duckdb.connect()
    r = {"files": len(files), "dead_letter_files": len(dead)}
    if files:
        con.read_parquet(files, hive_partitioning=True).create_view("t")
        (r["rows"], r["distinct_ids"], r["distinct_offsets"], r["windows"], r["id_min"], r["id_max"]) = con.execute(
            """SELECT count(*), count(DISTINCT event_id), count(DISTINCT (_topic, _partition, "_offset")),
                      count(DISTINCT (date, hour)),
                      min(CAST(substr(event_id, 5) AS BIGINT)), max(CAST(substr(event_id, 5) AS BIGINT))
               FROM t""").fetchall()[0]
        r["window_mismatches"] = con.execute(
            """SELECT count(*) FROM t
               WHERE substr(created_at, 1, 10) <> CAST(date AS VARCHAR) OR substr(created_at, 12, 2) <> hour""").fetchall()[0][0]
        # An order-free digest of the multiset of rows (every column): equal before and after
        # a compaction, which only moves rows between files.
        r["content_hash"] = str(con.execute("SELECT sum(hash(t)::HUGEINT) FROM t").fetchall()[0][0])
        # The same over what the payloads said and where they were (not the topic's name or
        # the broker's timestamps): equal for one stream loaded from JSON or from Avro.
        r["payload_hash"] = str(con.execute(
            'SELECT sum(hash(s)::HUGEINT) FROM (SELECT * EXCLUDE (_topic, "_kafka_timestamp") FROM t) s').fetchall()[0][0])
        r["rows_pyarrow"] = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    else:
        con.execute("CREATE TABLE t (_topic VARCHAR, _partition INTEGER, \"_offset\" BIGINT)")
        r.update(rows=0, content_hash="0", payload_hash="0", distinct_ids=0, distinct_offsets=0, windows=0, window_mismatches=0, rows_pyarrow=0,
                 id_min=None, id_max=None)
    if dead:
        con.read_parquet(dead).create_view("d")
    else:
        con.execute("CREATE TABLE d (topic VARCHAR, partition INTEGER, \"offset\" BIGINT, payload BLOB, error VARCHAR)")
    r["dead_letters"], r["dead_distinct_offsets"] = con.execute(
        'SELECT count(*), count(DISTINCT (topic, partition, "offset")) FROM d').fetchall()[0]
    r["dead_without_error_or_payload"] = con.execute(
        "SELECT count(*) FROM d WHERE error IS NULL OR error = ''").fetchall()[0][0]
    r["loaded_and_dead"] = con.execute(
        'SELECT count(*) FROM (SELECT _partition p, "_offset" o FROM t INTERSECT SELECT partition, "offset" FROM d)').fetchall()[0][0]
    per = con.execute(
        """SELECT p, min(o), max(o), count(*), count(DISTINCT o) FROM (
               SELECT _partition p, "_offset" o FROM t UNION ALL SELECT partition, "offset" FROM d)
           GROUP BY p ORDER BY p""").fetchall()
    r["partitions"] = {str(p): {"min": lo, "max": hi, "count": n, "distinct": dn} for p, lo, hi, n, dn in per}
    print(json.dumps(r))


if __name__ == "__main__":
    main()
