#!/usr/bin/env python3
"""Runs SQL in DuckDB with its Delta and Iceberg extensions, offline: `make sql Q="..."`.

    sql.py "SELECT count(*) FROM delta_scan('warehouse/orders')"
    sql.py "SELECT count(*) FROM iceberg_scan('warehouse/orders')"

The extensions are loaded from the duckdb-extension-delta, -iceberg and -avro wheels that
`make tools` installs into .tools/venv (never downloaded). `delta_scan(PATH)` reads a sluice
table through its Delta log, `iceberg_scan(PATH)` through its Iceberg metadata (`[iceberg]
enabled = true`), so only committed files are read, each once. Relative paths are taken from
the current folder.
"""
import os
import sys

import duckdb
import duckdb_extension_avro
import duckdb_extension_delta
import duckdb_extension_iceberg


def connect():
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    for module in (duckdb_extension_delta, duckdb_extension_avro, duckdb_extension_iceberg):
        name = module.__name__.removeprefix("duckdb_extension_")
        ext = os.path.join(os.path.dirname(module.__file__), "extensions",
                           f"v{duckdb.__version__}", f"{name}.duckdb_extension")
        con.execute(f"LOAD '{ext}'")
    return con


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        print(connect().sql(sys.argv[1]))
    except duckdb.Error as e:
        sys.exit(f"sql: {e}")


if __name__ == "__main__":
    main()
