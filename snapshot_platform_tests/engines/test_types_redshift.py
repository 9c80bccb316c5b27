"""Type torture test of the Redshift source's code path (psycopg, text results), run against
PostgreSQL 15 as test_redshift.py is: every cell compared with the server's own text of it
(the renderers of test_types_postgres.py, independent of the source's parsing).

Covered here: dates and timestamps BC and beyond year 9999 (Python's datetime holds neither),
microseconds, floats at their limits (the session's ``extra_float_digits``), TIMETZ as its text,
and infinity / 24:00:00 failing naming the column. Not coverable without Redshift: SUPER and
VARBYTE (Redshift's own types; kept as the server's text, as any type without a native decoding),
``extra_float_digits`` capped at 2 on Redshift (REAL then prints 8 significant digits: see
docs/sources.md).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.redshift_catalog import DAY, make_catalog, sql
from snapshot_platform_tests.pg_text import mismatches, server_text

COLUMNS = {
    "d": ("date", ["'2024-03-10'", "'4714-11-24 BC'", "'5874897-12-31'", "'0001-01-01'"]),
    "ts": ("timestamp", ["'2024-03-10 13:14:15.000001'", "'4714-11-24 00:00:00 BC'",
                         "'294246-12-31 23:59:59.999999'", "'10000-01-01 00:00:00.5'"]),
    "tstz": ("timestamptz", ["'2024-03-10 09:30:00+05:30'", "'0044-03-15 12:00:00+00 BC'",
                             "'294246-12-31 23:59:59.999999+00'", "'1970-01-01 00:00:00+00'"]),
    "tm": ("time", ["'13:14:15.123456'", "'00:00:00'", "'23:59:59.999999'", "'12:00:00.5'"]),
    "ttz": ("timetz", ["'13:14:15+05:30'", "'00:00:00-15:59'", "'24:00:00+15:59'", "'12:00:00.5+00'"]),
    "f4": ("real", ["1.5", "'NaN'", "3.4028235e38", "1.17549435e-38"]),
    "f8": ("float8", ["0.1::float8 + 0.2::float8", "'Infinity'", "5e-324", "1.7976931348623157e308"]),
    "big": ("int8", ["1", "-9223372036854775808", "9223372036854775807", "0"]),
}


def test_every_redshift_path_type_is_exact_cell_by_cell(pg_database: str, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "storage")
    ddl = ", ".join(f"{c} {t}" for c, (t, _) in COLUMNS.items())
    rows = [f"({i + 1}, '{DAY}', " + ", ".join(f"({v[i]})::{t}" for t, v in COLUMNS.values()) + ")" for i in range(4)]
    rows.append(f"(5, '{DAY}', " + ", ".join("NULL" for _ in COLUMNS) + ")")
    sql(pg_database, f"CREATE TABLE torture (id int8 PRIMARY KEY, day date, {ddl})",
        "INSERT INTO torture VALUES " + ", ".join(rows))
    catalog = make_catalog({"url": pg_database},
                           "SELECT * FROM torture WHERE day >= :partition_start AND day < :partition_end")
    outcome = take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert {c: table.schema.field(c).type for c in COLUMNS} == {
        "d": pa.date32(), "ts": pa.timestamp("us"), "tstz": pa.timestamp("us", tz="UTC"), "tm": pa.time64("us"),
        "ttz": pa.string(), "f4": pa.float32(), "f8": pa.float64(), "big": pa.int64(),
    }
    assert mismatches(table, server_text(pg_database, "torture", {c: c for c in COLUMNS})) == []
    recorded = {c.name: c.source_type for c in outcome.result.manifest.schema}
    assert (recorded["ttz"], recorded["tstz"], recorded["f4"]) == ("timetz", "timestamptz", "float4")

    # the comparison can fail: a microsecond off is caught
    raw = table.column("ts").combine_chunks().view(pa.int64()).to_pylist()
    raw[1] += 1
    broken = table.set_column(table.schema.get_field_index("ts"), "ts", pa.array(raw, pa.int64()).view(pa.timestamp("us")))
    assert mismatches(broken, {"ts": server_text(pg_database, "torture", {"ts": "ts"})["ts"]}) != []


@pytest.mark.parametrize(("pg_type", "value"), [
    ("date", "'infinity'"), ("timestamp", "'-infinity'"), ("timestamptz", "'infinity'"), ("time", "'24:00:00'"),
    ("timestamp", "'294276-12-31 23:59:59'"),
])
def test_values_no_arrow_type_holds_fail_naming_the_column(pg_database: str, tmp_path: Path, pg_type: str, value: str) -> None:
    store = SnapshotStore(tmp_path / "storage")
    sql(pg_database, f"CREATE TABLE odd (id int PRIMARY KEY, day date, odd_col {pg_type})",
        f"INSERT INTO odd VALUES (1, '{DAY}', NULL), (2, '{DAY}', {value})")
    catalog = make_catalog({"url": pg_database},
                           "SELECT id, odd_col FROM odd WHERE day >= :partition_start AND day < :partition_end")
    with pytest.raises(SourceError, match=r"column 'odd_col' .*holds '.*'.*odd_col::text"):
        take_snapshot(catalog, "snap", DAY, store, sleep=lambda s: pytest.fail("not transient"))
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []
