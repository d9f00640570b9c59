#!/usr/bin/env python3
"""Times an analyst's queries over a sluice table's files with DuckDB (bench helper).

    query.py RUNS < file-urls        one file:// URL a line (`sluice files`)

Prints one JSON object: the median seconds of RUNS runs of a day's hourly rollup and of a
one-hour lookup, and the rows seen.
"""
import json
import statistics
import sys
import time
from urllib.parse import unquote, urlparse

import duckdb


def main():
    runs = int(sys.argv[1])
    files = [unquote(urlparse(u).path) for u in sys.stdin.read().split()]
    con = duckdb.connect()
    con.read_parquet(files, hive_partitioning=True).create_view("t")
    queries = {
        "rollup": "SELECT hour, count(*), sum(amount), count(DISTINCT merchant_id) FROM t GROUP BY hour ORDER BY hour",
        "one_hour": "SELECT status, count(*), sum(amount) FROM t WHERE hour = 13 GROUP BY status",
    }
    out = {"files": len(files), "rows": con.execute("SELECT count(*) FROM t").fetchone()[0]}
    for name, q in queries.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            con.execute(q).fetchall()
            times.append(time.perf_counter() - t)
        out[name + "_s"] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
