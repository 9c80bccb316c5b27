"""Start the ``local-bigquery`` emulator offline, for the BigQuery source tests.

Run by the emulator's own virtualenv (Python 3.13: ``make bigquery-emulator`` builds ``.venv-bigquery``
from ``bigquery_emulator.requirements.txt``), not by the project's:

    .venv-bigquery/bin/python snapshot_platform_tests/bigquery_emulator.py serve --host 127.0.0.1 \
        --port 9050 --grpc-port 9060 --project proj --dataset ds --data-dir /tmp/bq

local-bigquery 0.4 asks for duckdb >= 2, whose extensions it downloads at start (impossible offline).
With duckdb 1.4.4 and the ``duckdb-ext-*`` wheels it serves, given two adaptations made here:

- every DuckDB connection looks for extensions in the wheels' folder and never downloads one;
- DuckDB 1.4 reports no row estimate for DuckLake tables (``estimated_size`` is NULL), which the
  emulator's table lookup multiplies: a missing estimate counts as 0 rows (only ``numRows`` in table
  metadata is affected, never query results).
"""

from __future__ import annotations

import pathlib
import sys

import duckdb
import duckdb_ext

EXTENSIONS = str(pathlib.Path(list(duckdb_ext.__path__)[0]) / "extensions")
_connect = duckdb.connect


def _offline_connect(database: str = ":memory:", read_only: bool = False, config: dict | None = None, **kw):
    config = dict(config or {})
    config.setdefault("extension_directory", EXTENSIONS)
    config.setdefault("autoinstall_known_extensions", False)
    return _connect(database, read_only, config, **kw)


duckdb.connect = _offline_connect

from local_bigquery.catalog import tables as _tables  # noqa: E402

_lookup = _tables._lookup


def _lookup_with_zero_rows(*args):
    found = _lookup(*args)
    return None if found is None else (found[0], found[1] or 0)


_tables._lookup = _lookup_with_zero_rows

from local_bigquery.cli import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
