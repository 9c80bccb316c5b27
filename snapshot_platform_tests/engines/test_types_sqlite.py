"""Type torture test for the SQLite source (the demo's engine).

A table with a column per kind of value SQLite holds (its storage classes INTEGER, REAL, TEXT,
BLOB, NULL; columns declared DATE/DATETIME/TIMESTAMP; a NUMERIC column holding integers and reals;
an undeclared column) with extreme, special and NULL values is snapshotted through the real
source, and every cell is compared with what SQLite itself says of it: ``typeof()`` and
``quote()``, and for timestamps SQLite's own ``strftime()`` of the instant, read through the
``sqlite3`` module without any converter. A test moves each column's value by one unit and shows
the comparison catches it. Values no one Arrow type holds exactly fail the read, naming the
column, before anything is published; the demo's versions keep their ids.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform.demo import source_db
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore, WriterSettings

UTC = dt.timezone.utc
DAY = "2024-03-10"
WINDOW = " WHERE :partition_start < :partition_end"  # every row, in every window
EMOJI = "😀 ünïcode ✓"

DDL = """CREATE TABLE torture (
  id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, d DATE, ts TIMESTAMP,
  dtm DATETIME, x, empty TEXT
)"""
COLUMNS = {  # column → (Arrow type, source_type recorded)
    "id": (pa.int64(), "integer"), "i": (pa.int64(), "integer"), "r": (pa.float64(), "real"),
    "t": (pa.string(), "text"), "b": (pa.binary(), "blob"), "n": (pa.float64(), "integer, real"),
    "d": (pa.date32(), "DATE"), "ts": (pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
    "dtm": (pa.timestamp("us", tz="UTC"), "DATETIME"), "x": (pa.int64(), "integer"),
    "empty": (pa.string(), "null"),
}
ROWS = [
    (1, -(2**63), -1.7976931348623157e308, "", b"", 2**53, "0001-01-01", "0001-01-01 00:00:00",
     "2024-03-10", -1, None),
    (2, 2**63 - 1, 1.7976931348623157e308, EMOJI * 1000, b"\xff" * 100_000, 1.5, "9999-12-31",
     "9999-12-31 23:59:59.999999", "2024-03-10T23:59:59.999999Z", 2**63 - 1, None),
    (3, 0, 0.30000000000000004, "nul\x00inside", b"\x00\x00", -(2**53), "2024-02-29",
     "2024-03-10T12:00:00.5+05:30", "2024-03-10 12:00", 0, None),
    (4, 1, 5e-324, "line\nbreak\r\n'quote'", b"a\x00", 0.1, "2024-03-10", "2024-03-31 01:30:00.000001-02:00",
     "2024-03-10 00:00:00Z", 42, None),
    (5, -1, math.inf, " padded ", b"\x00", 7, "1970-01-01", "1970-01-01 00:00:00", "1969-12-31 23:59:59.999999",
     None, None),
    (6, None, -math.inf, None, None, None, None, None, None, None, None),
    (7, None, 2.2250738585072014e-308, None, None, 3.0, None, None, None, None, None),
    (8, None, None, None, None, None, None, None, None, None, None),
]


def make_catalog(path: Path, query: str) -> Catalog:
    return parse_catalog({
        "sources": {"lite": {"kind": "sqlite", "path": str(path)}},
        "snapshots": {"snap": {"source": "lite", "query": query + WINDOW,
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}, "key": ["id"]}},
    })


@pytest.fixture
def torture(tmp_path: Path) -> tuple[Path, pa.Table, dict[str, Any]]:
    db = tmp_path / "torture.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(DDL)
        conn.executemany(f"INSERT INTO torture VALUES ({', '.join('?' * 11)})", ROWS)
    conn.close()
    store = SnapshotStore(tmp_path / "storage")
    outcome = take_snapshot(make_catalog(db, "SELECT * FROM torture"), "snap", DAY, store)
    return db, store.read_table("snap", DAY), outcome.result.manifest


def sqlite_truth(db: Path, column: str) -> list[tuple[str, str, str | None, str]]:
    """(typeof, quote, strftime of the instant, hex) of each cell, by SQLite itself (no converters)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            f"SELECT typeof({column}), quote({column}), strftime('%Y-%m-%d %H:%M:%S', {column}), hex({column}) "
            f"FROM torture ORDER BY id").fetchall()
    conn.close()
    return rows


def agrees(kind: str, quoted: str, instant: str | None, hexed: str, t: pa.DataType, v: Any) -> bool:
    """Whether the Parquet value ``v`` is the value SQLite holds (``typeof`` ``kind``, ``quote``/``hex`` text)."""
    if kind == "null":
        return v is None
    if v is None:
        return False
    if kind == "integer":
        return type(v) in (int, float) and int(quoted) == v  # Python compares int and float exactly
    if kind == "real":
        return type(v) is float and float(quoted) == v  # quote() prints 21 significant digits
    if kind == "blob":
        return isinstance(v, bytes) and hexed == v.hex().upper()
    text = bytes.fromhex(hexed).decode("utf-8")  # (quote() stops at a NUL character)
    if pa.types.is_date(t):
        return v.isoformat() == text
    if pa.types.is_timestamp(t):
        # the instant as SQLite computes it (offsets applied), to the second; the fraction as written
        frac = re.search(r":\d{2}\.(\d+)", text)
        micro = int(frac.group(1).ljust(6, "0")) if frac else 0
        if instant is None and frac:  # SQLite rounds to milliseconds: 9999-12-31 23:59:59.9995 is beyond its range
            with sqlite3.connect(":memory:") as mem:
                (instant,) = mem.execute("SELECT strftime('%Y-%m-%d %H:%M:%S', ?)",
                                         (text.replace("." + frac.group(1), ""),)).fetchone()
            mem.close()
        return v.replace(microsecond=0, tzinfo=None).isoformat(" ") == instant and v.microsecond == micro
    return isinstance(v, str) and v.encode("utf-8").hex().upper() == hexed


def mismatches(db: Path, table: pa.Table, columns: list[str]) -> list[tuple[int, str, Any]]:
    out = []
    for c in columns:
        t = table.schema.field(c).type
        # (rows are in id order, ids 1, 2, ...: the position names the row even when ``id`` is the broken column)
        for row_id, (v, truth) in enumerate(zip(table.column(c).to_pylist(), sqlite_truth(db, c)), start=1):
            if not agrees(*truth, t, v):
                out.append((row_id, c, v))
    return out


def test_every_cell_equals_what_sqlite_holds(torture: tuple[Path, pa.Table, dict[str, Any]]) -> None:
    db, table, manifest = torture
    assert table.num_rows == len(ROWS)
    assert {f.name: f.type for f in table.schema} == {c: v[0] for c, v in COLUMNS.items()}
    assert {e.name: e.source_type for e in manifest.schema} == {c: v[1] for c, v in COLUMNS.items()}
    assert mismatches(db, table, list(COLUMNS)) == []
    # and without SQLite: what was inserted
    assert table.column("i").to_pylist()[:2] == [-(2**63), 2**63 - 1]
    assert table.column("t").to_pylist()[2] == "nul\x00inside"
    assert table.column("ts").to_pylist()[2] == dt.datetime(2024, 3, 10, 6, 30, 0, 500000, tzinfo=UTC)
    assert table.column("n").to_pylist()[:2] == [2**53, 1.5]


def one_unit_off(t: pa.DataType, v: Any) -> Any:
    if pa.types.is_integer(t):
        return v - 1 if v == 2**63 - 1 else v + 1
    if pa.types.is_floating(t):
        return math.nextafter(v, 0.0)
    if pa.types.is_date(t):
        return v - dt.timedelta(days=1)
    if pa.types.is_timestamp(t):
        return v - dt.timedelta(microseconds=1)
    if pa.types.is_string(t):
        return v[:-1] + chr(ord(v[-1]) + 1) if v else " "
    return v[:-1] + bytes([(v[-1] + 1) % 256]) if v else b"\x00"


def test_a_value_one_unit_off_is_caught(torture: tuple[Path, pa.Table, dict[str, Any]]) -> None:
    """The comparison can fail: for every column, one cell moved by one unit is reported, alone."""
    db, table, _ = torture
    for c, (t, _st) in COLUMNS.items():
        values = table.column(c).to_pylist()
        row = next((i for i in (1, 0, 2) if values[i] is not None), None)
        if row is None:  # the all-NULL column: a value where SQLite holds NULL
            row, values[0] = 0, ""
        else:
            values[row] = one_unit_off(t, values[row])
        broken = table.set_column(table.schema.get_field_index(c), c, pa.array(values, t))
        assert [(i, col) for i, col, _v in mismatches(db, broken, [c])] == [(row + 1, c)], c
    # a float64 that is the float32 next to the stored double (what a 4-byte read would give)
    r = table.column("r").to_pylist()
    r[2] = struct.unpack("<f", struct.pack("<f", r[2]))[0]
    broken = table.set_column(table.schema.get_field_index("r"), "r", pa.array(r, pa.float64()))
    assert [(i, c) for i, c, _v in mismatches(db, broken, ["r"])] == [(3, "r")]


BATCH = 50_000  # the source's batch size: a value after it comes in the second batch


@pytest.mark.parametrize(
    ("ddl", "rows", "message"),
    [
        # integers and text in different rows: never coerced
        ("v", "SELECT 1, 1 UNION ALL SELECT 2, 'a'", "column 'v' holds values of different storage classes (integer, text)"),
        ("v", "SELECT 1, x'00' UNION ALL SELECT 2, 'a'", "(blob, text)"),
        # integers beyond 2^53 among reals: float64 would round them
        ("v", f"SELECT 1, 1.5 UNION ALL SELECT 2, {2**53 + 1}", "integers beyond 2^53 among reals"),
        # a later batch with another kind: pyarrow would have truncated 1.5 to 1, or failed on text
        ("v", f"SELECT value, 1 FROM generate WHERE value <= {BATCH} UNION ALL SELECT {BATCH + 1}, 1.5",
         f"column 'v' (integer in the first {BATCH} rows) holds real values later"),
        ("v", f"SELECT value, 'a' FROM generate WHERE value <= {BATCH} UNION ALL SELECT {BATCH + 1}, 7",
         "(text in the first 50000 rows) holds integer values later"),
        # declared date types: only the text they describe, never truncated
        ("v DATE", "SELECT 1, '2024-03-10 12:00:00'", "column 'v' (declared DATE) holds '2024-03-10 12:00:00'"),
        ("v DATE", "SELECT 1, 20240310", "column 'v' (declared DATE) holds '20240310'"),
        ("v DATE", "SELECT 1, '2024-02-30'", "holds '2024-02-30', which is not a YYYY-MM-DD date"),
        ("v TIMESTAMP", "SELECT 1, '2024-03-10 12:00:00.1234567'", "(declared TIMESTAMP) holds '2024-03-10 12:00:00.1234567'"),
        ("v DATETIME", "SELECT 1, 1710028800", "(declared DATETIME) holds '1710028800'"),
        # text that is not UTF-8
        ("v TEXT", "SELECT 1, CAST(x'ff41' AS TEXT)", "Could not decode to UTF-8 column 'v'"),
    ],
)
def test_values_no_arrow_type_holds_fail_naming_the_column(tmp_path: Path, ddl: str, rows: str, message: str) -> None:
    db = tmp_path / "bad.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE bad (id INTEGER PRIMARY KEY, {ddl})")
        conn.execute(f"CREATE TABLE generate (value INTEGER)")
        conn.execute(f"WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < {BATCH}) "
                     "INSERT INTO generate SELECT v FROM s")
        conn.execute(f"INSERT INTO bad {rows}")
    conn.close()
    store = SnapshotStore(tmp_path / "storage")
    with pytest.raises(SourceError) as err:
        take_snapshot(make_catalog(db, "SELECT id, v FROM bad"), "snap", DAY, store)
    assert message in str(err.value) and str(err.value).startswith("source lite")
    assert "CAST" in str(err.value)
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []


def test_the_demo_keeps_its_version_ids(tmp_path: Path) -> None:
    """The demo's columns were exact before the type rules: the same Arrow types, the same bytes, the
    same version ids (computed with the source of commit 1425f2d, under the writer settings of that
    time; seed 7 of the demo generator), and pinned ids of their own under today's defaults."""
    db = tmp_path / "production.sqlite"
    source_db.create(db)
    doc = yaml.safe_load((Path(source_db.__file__).parent / "snapshots.yaml").read_text())
    doc["sources"]["demo_db"]["path"] = str(db)
    doc.pop("models")
    catalog = parse_catalog(doc)
    earlier = SnapshotStore(tmp_path / "earlier",
                            settings=WriterSettings(dictionary="all", statistics="all", decimal_storage="fixed"))
    ids = {day: take_snapshot(catalog, "customer_data", day, earlier).result.manifest.version
           for day in ("2024-01-01", "2024-01-02")}
    assert ids == {"2024-01-01": "55a45599ccbeff68dd77", "2024-01-02": "44c94f8e1b779fdd5363"}
    store = SnapshotStore(tmp_path / "storage")
    ids = {day: take_snapshot(catalog, "customer_data", day, store).result.manifest.version
           for day in ("2024-01-01", "2024-01-02")}
    assert ids == {"2024-01-01": "c17da99dbb617258b438", "2024-01-02": "0232b5d046877fa1d694"}
    schema = store.read_manifest("customer_data", "2024-01-01").schema
    assert [e.source_type for e in schema] == ["integer", "DATE", "text", "integer", "real", "integer", "integer"]
