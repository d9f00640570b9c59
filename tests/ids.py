#!/usr/bin/env python3
"""Audits a sluice table id by id, independently of sluice's own bookkeeping.

Reads the produced ids (one `ID MALFORMED` pair a line: MALFORMED is 1 for a record the
producer made malformed on purpose) and the table's committed files with DuckDB, and checks
that every valid id is exactly one row and no dead letter, every malformed id exactly one dead
letter (found by its Kafka key) and no row, and that nothing else is in the table. Prints one
JSON report; exits 1 when anything is off.
"""
import argparse
import json
import sys

import duckdb

from reader import local_paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--produced", required=True)
    a = ap.parse_args()
    files = local_paths(a.sluice, a.job)
    dead = local_paths(a.sluice, a.job, "--dead-letters")
    con = duckdb.connect()
    con.execute("CREATE TABLE produced (id VARCHAR, malformed BOOLEAN)")
    con.execute(f"INSERT INTO produced SELECT column0, column1 = 1 FROM read_csv({a.produced!r}, delim=' ', header=false, columns={{'column0': 'VARCHAR', 'column1': 'INTEGER'}})")
    if files:
        con.execute(f"CREATE VIEW rows AS SELECT event_id AS id FROM read_parquet({files!r}, hive_partitioning=true)")
    else:
        con.execute("CREATE TABLE rows (id VARCHAR)")
    if dead:
        con.execute(f"CREATE VIEW dead AS SELECT CAST(key AS VARCHAR) AS id FROM read_parquet({dead!r})")
    else:
        con.execute("CREATE TABLE dead (id VARCHAR)")
    q = lambda sql: con.execute(sql).fetchall()[0][0]
    counts = """
        WITH r AS (SELECT id, count(*) n FROM rows GROUP BY id),
             d AS (SELECT id, count(*) n FROM dead GROUP BY id)
        SELECT p.id, p.malformed, coalesce(r.n, 0) AS rows, coalesce(d.n, 0) AS dead
        FROM produced p LEFT JOIN r USING (id) LEFT JOIN d USING (id)"""
    con.execute(f"CREATE TABLE counts AS {counts}")
    report = {
        "produced": q("SELECT count(*) FROM produced"),
        "produced_malformed": q("SELECT count(*) FROM produced WHERE malformed"),
        "rows": q("SELECT count(*) FROM rows"),
        "dead_letters": q("SELECT count(*) FROM dead"),
        "valid_missing": q("SELECT count(*) FROM counts WHERE NOT malformed AND rows = 0"),
        "valid_duplicated": q("SELECT count(*) FROM counts WHERE NOT malformed AND rows > 1"),
        "valid_dead_lettered": q("SELECT count(*) FROM counts WHERE NOT malformed AND dead > 0"),
        "malformed_missing": q("SELECT count(*) FROM counts WHERE malformed AND dead = 0"),
        "malformed_duplicated": q("SELECT count(*) FROM counts WHERE malformed AND dead > 1"),
        "malformed_loaded": q("SELECT count(*) FROM counts WHERE malformed AND rows > 0"),
        "unexpected_rows": q("SELECT count(*) FROM rows WHERE id NOT IN (SELECT id FROM produced)"),
        "unexpected_dead": q("SELECT count(*) FROM dead WHERE id NOT IN (SELECT id FROM produced)"),
    }
    report["missing_examples"] = [r[0] for r in con.execute(
        "SELECT id FROM counts WHERE (NOT malformed AND rows = 0) OR (malformed AND dead = 0) ORDER BY id LIMIT 10").fetchall()]
    print(json.dumps(report))
    bad = [k for k, v in report.items()
           if k not in ("produced", "produced_malformed", "rows", "dead_letters", "missing_examples") and v]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
