"""The MySQL/MariaDB source against the MariaDB server on this machine.

Type fidelity from the result metadata, the half-open window in UTC whatever the server's time zone,
the consistent snapshot while rows stream, the source_state marker, and one partition through
``dagster asset materialize``. Safety (read-only, timeouts, wrong passwords) is in test_safety.py.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymysql
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import Window, make_source
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import dagster_materialize, published_manifests
from snapshot_platform_tests.conftest import mysql_reader_url

UTC = dt.timezone.utc
DAY = "2024-03-10"


def make_catalog(url: Any, query: str, key: list[str], name: str = "snap", **source: Any) -> Catalog:
    return parse_catalog({
        "sources": {"maria": {"kind": "mysql", "url": mysql_reader_url(url) if isinstance(url, str) else url, **source}},
        "snapshots": {name: {"source": "maria", "query": query,
                             "partitions": {"cadence": "daily", "start": "2024-01-01"}, "key": key}},
    })


def sql(url: str, *statements: str) -> list[tuple]:
    db = url.rsplit("/", 1)[1]
    rows: list[tuple] = []
    with pymysql.connect(host="127.0.0.1", port=3306, user="root", database=db, autocommit=True) as conn:
        cur = conn.cursor()
        for s in statements:
            cur.execute(s)
            rows = list(cur.fetchall()) if cur.description else []
    return rows


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


TYPES_DDL = """
CREATE TABLE typed (
  id BIGINT PRIMARY KEY, d DATE, dec_15_2 DECIMAL(15,2), dec_65_30 DECIMAL(65,30),
  udec DECIMAL(10,3) UNSIGNED, dtm DATETIME(6), ts TIMESTAMP(6) NULL, t TIME(6), b BIT(10),
  ti TINYINT, uti TINYINT UNSIGNED, ubig BIGINT UNSIGNED, f FLOAT, dbl DOUBLE, s VARCHAR(20),
  bl BLOB, vb VARBINARY(10), j JSON, e ENUM('a','b'), y YEAR, txt TEXT
)"""


def test_type_fidelity_from_result_metadata(mysql_database: str, store: SnapshotStore) -> None:
    sql(
        mysql_database,
        TYPES_DDL,
        "SET time_zone = '+05:00'",  # TIMESTAMP values written in +05:00 must come out as UTC instants
        """INSERT INTO typed VALUES
        (1, '2024-03-10', 1234567890123.45, '12345678901234567890123456789012345.123456789012345678901234567890',
         1.5, '2024-03-10 13:14:15.123456', '2024-03-10 05:00:00.5', '-838:59:59', b'1111111111', -128, 255,
         18446744073709551615, 1.5, 0.1, 'ünïcode', X'0001', 'ab', '{"a": 1}', 'b', 2024, '100% sure'),
        (2, '2024-03-10', -0.01, '-0.000000000000000000000000000001', 0, '1000-01-01 00:00:00', '1970-01-01 05:00:01',
         '00:00:00.000001', b'0', 127, 0, 0, -1.5, -1.5e300, '', X'', '', 'null', 'a', 1901, ''),
        (3, '2024-03-10', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL),
        (4, '2024-03-11', 1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'next day', NULL,
         NULL, NULL, NULL, NULL, NULL)""",
    )
    catalog = make_catalog(
        mysql_database,
        "SELECT * FROM typed WHERE d >= :partition_start AND d < :partition_end AND (txt IS NULL OR txt LIKE '%')",
        ["id"],
        fetch_batch_rows=100,
    )
    outcome = take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    expected = {
        "id": pa.int64(), "d": pa.date32(), "dec_15_2": pa.decimal128(15, 2), "dec_65_30": pa.decimal256(65, 30),
        "udec": pa.decimal128(10, 3), "dtm": pa.timestamp("us"), "ts": pa.timestamp("us", tz="UTC"),
        "t": pa.duration("us"), "b": pa.uint64(), "ti": pa.int8(), "uti": pa.uint8(), "ubig": pa.uint64(),
        "f": pa.float32(), "dbl": pa.float64(), "s": pa.string(), "bl": pa.binary(), "vb": pa.binary(),
        "j": pa.string(), "e": pa.string(), "y": pa.int16(), "txt": pa.string(),
    }
    assert {f.name: f.type for f in table.schema} == expected
    assert table.column_names == list(expected)
    r1, r2, r3 = table.to_pylist()
    assert r1["dec_15_2"] == Decimal("1234567890123.45")
    assert r1["dec_65_30"] == Decimal("12345678901234567890123456789012345.123456789012345678901234567890")
    assert r2["dec_65_30"] == Decimal("-0.000000000000000000000000000001")
    assert r1["udec"] == Decimal("1.500")
    assert r1["dtm"] == dt.datetime(2024, 3, 10, 13, 14, 15, 123456)  # DATETIME: the wall clock as stored
    assert r1["ts"] == dt.datetime(2024, 3, 10, 0, 0, 0, 500000, tzinfo=UTC)  # TIMESTAMP: the instant
    assert r2["ts"] == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert r1["t"] == -dt.timedelta(hours=838, minutes=59, seconds=59)
    assert r2["t"] == dt.timedelta(microseconds=1)
    assert (r1["b"], r2["b"]) == (1023, 0)
    assert (r1["ti"], r1["uti"], r1["ubig"]) == (-128, 255, 2**64 - 1)
    assert (r1["f"], r1["dbl"], r2["dbl"]) == (1.5, 0.1, -1.5e300)
    assert (r1["s"], r1["bl"], r1["vb"], r1["e"], r1["y"]) == ("ünïcode", b"\x00\x01", b"ab", "b", 2024)
    assert r1["txt"] == "100% sure"
    assert r2["bl"] == b"" and r2["s"] == ""
    assert all(r3[c] is None for c in expected if c not in ("id", "d"))
    assert outcome.result.manifest.row_count == 3


def test_window_is_utc_whatever_the_server_time_zone(mysql_database: str, store: SnapshotStore) -> None:
    sql(
        mysql_database,
        "CREATE TABLE events (id INT PRIMARY KEY, at TIMESTAMP(6) NOT NULL)",
        "SET time_zone = '+01:00'",
        """INSERT INTO events VALUES
          (1, '2024-03-10 00:59:59.999999'),  -- 03-09 23:59:59.999999 UTC: out
          (2, '2024-03-10 01:00:00'),         -- exactly the start: in
          (3, '2024-03-11 00:59:59.999999'),  -- last microsecond: in
          (4, '2024-03-11 01:00:00')          -- exactly the end: out
        """,
    )
    catalog = make_catalog(mysql_database, "SELECT id, at FROM events WHERE at >= :partition_start AND at < :partition_end", ["id"])
    outcome = take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.column("id").to_pylist() == [2, 3]
    assert table.column("at").to_pylist()[0] == dt.datetime(2024, 3, 10, tzinfo=UTC)
    assert outcome.result.manifest.params == {
        "partition_start": "2024-03-10T00:00:00+00:00", "partition_end": "2024-03-11T00:00:00+00:00",
    }


def test_rows_committed_while_streaming_are_not_in_the_snapshot(mysql_database: str) -> None:
    sql(mysql_database, "CREATE TABLE t (id INT PRIMARY KEY, d DATE)",
        "INSERT INTO t SELECT seq, '2024-03-10' FROM seq_1_to_1000")
    catalog = make_catalog(mysql_database, "SELECT id FROM t WHERE d >= :partition_start AND d < :partition_end",
                           ["id"], fetch_batch_rows=100)
    source = make_source("maria", catalog.sources["maria"])
    window = Window(dt.datetime(2024, 3, 10, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC))
    with source.read(catalog.snapshots["snap"].query, window, ["id"]) as read:
        batches = iter(read.batches)
        first = next(batches)
        sql(mysql_database, "INSERT INTO t VALUES (5000, '2024-03-10')", "DELETE FROM t WHERE id = 999")
        rest = list(batches)
    ids = first.column(0).to_pylist() + [i for b in rest for i in b.column(0).to_pylist()]
    assert ids == list(range(1, 1001))
    assert max(b.num_rows for b in [first, *rest]) <= 100  # bounded batches


def test_source_state_records_the_snapshot_marker(mysql_database: str, store: SnapshotStore) -> None:
    sql(mysql_database, "CREATE TABLE t (id INT PRIMARY KEY, d DATE)", "INSERT INTO t VALUES (1, '2024-03-10')")
    catalog = make_catalog(mysql_database, "SELECT id FROM t WHERE d >= :partition_start AND d < :partition_end", ["id"])
    m = take_snapshot(catalog, "snap", DAY, store).result.manifest
    state = m.source_state
    assert state["engine"] in {"mariadb", "mysql"}
    assert "MariaDB" in state["server_version"] or state["engine"] == "mysql"
    if state["engine"] == "mariadb":
        # this server writes no binlog: the GTID fields are there, empty; with log_bin they hold positions
        assert "gtid_current_pos" in state and "gtid_binlog_pos" in state
        assert state["log_bin"] is False or state.get("binlog_file")
    assert state["transaction_start"].endswith("Z")
    assert m.source == {"name": "maria", "kind": "mysql", "host": "127.0.0.1", "port": 3306,
                           "database": mysql_database.rsplit("/", 1)[1]}


@pytest.mark.slow
def test_dagster_asset_materialize_cli(mysql_database: str, platform_env: Any, write_catalog: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sql(mysql_database, "CREATE TABLE customers (id INT PRIMARY KEY, signup DATE, spend DECIMAL(12,2))",
        "INSERT INTO customers VALUES (1, '2024-03-10', 10.50), (2, '2024-03-10', 0.01), (3, '2024-03-11', 5)")
    catalog = write_catalog({
        "sources": {"shop": {"kind": "mysql", "url": {"env": "SP_TEST_MYSQL_URL"}, "statement_timeout_s": 30,
                             "max_concurrent_queries": 3}},
        "snapshots": {"customers": {
            "source": "shop", "key": ["id"],
            "query": "SELECT id, signup, spend FROM customers WHERE signup >= :partition_start AND signup < :partition_end",
            "partitions": {"cadence": "daily", "start": "2024-01-01"},
        }},
    })
    proc = dagster_materialize(catalog, platform_env, ["customers"], DAY, SP_TEST_MYSQL_URL=mysql_reader_url(mysql_database))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = published_manifests(platform_env.storage, "customers", DAY)
    assert m.source["kind"] == "mysql" and m.source["name"] == "shop"
    assert m.source_state["engine"] == "mariadb"
    assert "gtid_current_pos" in m.source_state
    assert m.row_count == 2
    assert m.dagster_run_id
    # the step set the source's pool limit from max_concurrent_queries
    from dagster import DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", str(platform_env.dagster_home))
    with DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("source_shop").slot_count == 3


def test_backslash_escaped_quotes_and_colons_in_literals_are_not_parameters(mysql_database: str,
                                                                            store: SnapshotStore) -> None:
    """MySQL reads \\' inside a string as a quote: the scanner must too, or ':partition_end' inside the
    literal below would be taken for a placeholder (and the real one missed)."""
    sql(mysql_database, "CREATE TABLE t (id INT PRIMARY KEY, d DATE, note VARCHAR(40))",
        "INSERT INTO t VALUES (1, '2024-03-10', 'it''s'), (2, '2024-03-10', 'x')")
    catalog = make_catalog(
        mysql_database,
        "SELECT id, 'it\\'s :partition_end 10:30' AS lit FROM t WHERE d >= :partition_start AND d < :partition_end",
        ["id"],
    )
    take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.column("lit").to_pylist() == ["it's :partition_end 10:30"] * 2


def test_the_catalog_reads_a_query_in_its_source_dialect() -> None:
    """The same text is valid MySQL and broken PostgreSQL (where \\ does not escape a quote)."""
    from snapshot_platform.catalog import CatalogError

    query = "SELECT id, 'it\\'s' AS lit FROM t WHERE d >= :partition_start AND d < :partition_end"
    make_catalog({"env": "X"}, query, ["id"])  # MySQL: fine
    with pytest.raises(CatalogError, match=r"snapshots.snap: field 'query': .*read as postgres SQL"):
        parse_catalog({
            "sources": {"pg": {"kind": "postgres", "url": {"env": "X"}}},
            "snapshots": {"snap": {"source": "pg", "query": query, "key": ["id"],
                                   "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
        })
