#!/usr/bin/env python3
"""Runs SQL in DuckDB with its Delta extension, offline: `make sql Q="..."`.

    sql.py "SELECT count(*) FROM delta_scan('warehouse/orders')"

The extension is loaded from the duckdb-extension-delta wheel that `make tools` installs into
.tools/venv (never downloaded). `delta_scan(PATH)` reads a sluice table through its Delta log,
so only committed files are read, each once. Relative paths are taken from the current folder.
"""
import os
import sys

import duckdb
import duckdb_extension_delta


def connect():
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    ext = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions",
                       f"v{duckdb.__version__}", "delta.duckdb_extension")
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
