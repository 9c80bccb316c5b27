"""The PostgreSQL source against a real server, through ``take_snapshot`` and ``SnapshotStore.read_table``.

Covers type fidelity (exact decimals, UTC instants, NULLs), the half-open window binding, deterministic
ordering by the catalog key, the manifest's source fields, the read-only session, the statement timeout,
hostile names and partition keys, and a fast failure on an unreachable server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.conftest import reader_url

pytestmark = pytest.mark.postgres

UTC = dt.timezone.utc
DAY = "2024-03-10"


def make_catalog(url: Any, query: str, key: list[str], name: str = "snap", **source: Any) -> Catalog:
    return parse_catalog(
        {
            # a SELECT-only role, unless the test reads as the superuser on purpose (allow_privileged_role)
            "sources": {"pg": {"kind": "postgres", **source,
                               "url": reader_url(url) if isinstance(url, str) and not source.get("allow_privileged_role") else url}},
            "snapshots": {
                name: {
                    "source": "pg",
                    "query": query,
                    "partitions": {"cadence": "daily", "start": "2024-01-01"},
                    "key": key,
                }
            },
        }
    )


def snapshot_table(url: str, store: SnapshotStore, query: str, key: tuple[str, ...] = ("id",)) -> pa.Table:
    """Snapshot ``query`` for DAY through a one-entry catalog and read the published version back."""
    take_snapshot(make_catalog(url, query, list(key)), "snap", DAY, store)
    return store.read_table("snap", DAY)


def sql(url: str, *statements: str) -> list[tuple]:
    """Run statements on the test database (autocommit); the rows of the last one."""
    rows: list[tuple] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            cur = conn.execute(s)
            rows = cur.fetchall() if cur.description else []
    return rows


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


# ---------------------------------------------------------------- types


TYPES_DDL = """
CREATE TABLE typed (
    id        bigint PRIMARY KEY,
    day       date,
    n_15_2    numeric(15, 2),
    n_38_10   numeric(38, 10),
    n_40_5    numeric(40, 5),
    n_free    numeric,
    ts        timestamp,
    tstz      timestamptz,
    flag      boolean,
    label     text,
    big       bigint,
    mid       integer,
    small     smallint,
    dbl       double precision
)
"""

TYPES_QUERY = """
SELECT id, day, n_15_2, n_38_10, n_40_5, n_free, ts, tstz, flag, label, big, mid, small, dbl
FROM typed
WHERE (day >= :partition_start AND day < :partition_end) OR (day IS NULL AND id = 3)
"""


def test_type_fidelity_and_nulls(pg_database: str, store: SnapshotStore) -> None:
    sql(
        pg_database,
        TYPES_DDL,
        """
        INSERT INTO typed VALUES
        (1, '2024-03-10', 1234567890123.45, 1234567890123456789012345678.0123456789,
            12345678901234567890123456789012345.12345, 3.14159265358979323846264338327950288419716939937510,
            '2024-03-10 13:14:15.123456', '2024-03-10 09:30:00+05:30', true, 'hello ünïcode',
            9223372036854775807, -2147483648, 32767, 0.1),
        (2, '2024-03-10', -0.01, -0.0000000001, -99999999999999999999999999999999999.99999,
            -1e-30, '1999-12-31 23:59:59', '2024-03-09 20:00:00-08:00', false, '',
            -9223372036854775808, 2147483647, -32768, -1.5e300),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (4, '2024-03-11', 1, 1, 1, 1, NULL, NULL, NULL, 'next day', NULL, NULL, NULL, NULL)
        """,
    )
    catalog = make_catalog(pg_database, TYPES_QUERY, ["id"])
    outcome = take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)

    expected_types = {
        "id": pa.int64(),
        "day": pa.date32(),
        "n_15_2": pa.decimal128(15, 2),
        "n_38_10": pa.decimal128(38, 10),
        "n_40_5": pa.decimal256(40, 5),
        "n_free": pa.string(),
        "ts": pa.timestamp("us"),
        "tstz": pa.timestamp("us", tz="UTC"),
        "flag": pa.bool_(),
        "label": pa.string(),
        "big": pa.int64(),
        "mid": pa.int32(),
        "small": pa.int16(),
        "dbl": pa.float64(),
    }
    assert {f.name: f.type for f in table.schema} == expected_types
    assert table.column_names == list(expected_types)  # the query's column order
    assert [c.type for c in outcome.result.manifest.schema] == [str(t) for t in expected_types.values()]

    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3]  # id 4 is outside the window
    r1, r2, r3 = rows

    # exact decimals, never floats
    for col in ("n_15_2", "n_38_10", "n_40_5"):
        assert isinstance(r1[col], Decimal), col
    assert r1["n_15_2"] == Decimal("1234567890123.45")
    assert r1["n_38_10"] == Decimal("1234567890123456789012345678.0123456789")
    assert r1["n_40_5"] == Decimal("12345678901234567890123456789012345.12345")
    assert r2["n_15_2"] == Decimal("-0.01")
    assert r2["n_38_10"] == Decimal("-0.0000000001")
    assert r2["n_40_5"] == Decimal("-99999999999999999999999999999999999.99999")
    # unconstrained NUMERIC: exact text, every digit kept
    assert Decimal(r1["n_free"]) == Decimal("3.14159265358979323846264338327950288419716939937510")
    assert Decimal(r2["n_free"]) == Decimal("-1e-30")

    # timestamptz: the instant, in UTC, whatever offset it was written with
    assert r1["tstz"] == dt.datetime(2024, 3, 10, 4, 0, tzinfo=UTC)
    assert r2["tstz"] == dt.datetime(2024, 3, 10, 4, 0, tzinfo=UTC)
    assert r1["tstz"].utcoffset() == dt.timedelta(0)
    # timestamp without time zone: the wall-clock value, unchanged
    assert r1["ts"] == dt.datetime(2024, 3, 10, 13, 14, 15, 123456)
    assert r2["ts"] == dt.datetime(1999, 12, 31, 23, 59, 59)
    assert r1["day"] == dt.date(2024, 3, 10)
    assert (r1["flag"], r2["flag"]) == (True, False)
    assert (r1["label"], r2["label"]) == ("hello ünïcode", "")
    assert (r1["big"], r2["big"]) == (2**63 - 1, -(2**63))
    assert (r1["mid"], r2["mid"]) == (-(2**31), 2**31 - 1)
    assert (r1["small"], r2["small"]) == (2**15 - 1, -(2**15))
    assert (r1["dbl"], r2["dbl"]) == (0.1, -1.5e300)

    # NULL in every column type
    assert all(r3[c] is None for c in expected_types if c != "id")
    assert all(table.column(c).null_count == 1 for c in expected_types if c != "id")


def test_numeric_precision_and_scale_forms_of_postgres_15(pg_database: str, store: SnapshotStore) -> None:
    """PostgreSQL 15 allows a negative scale (NUMERIC(5,-2): rounded to hundreds) and a scale above
    the precision (NUMERIC(2,5): 0.000xx). Both must snapshot to exact decimals."""
    sql(
        pg_database,
        "CREATE TABLE scales (id int PRIMARY KEY, day date, hundreds numeric(5, -2), tiny numeric(2, 5),"
        " whole numeric(10))",
        "INSERT INTO scales VALUES (1, '2024-03-10', 12345, 0.00012, 1234567890)",
    )
    row = snapshot_table(
        pg_database, store,
        "SELECT id, hundreds, tiny, whole FROM scales WHERE day >= :partition_start AND day < :partition_end",
    ).to_pylist()[0]
    assert row["whole"] == Decimal("1234567890")
    assert row["hundreds"] == Decimal("12300")
    assert row["tiny"] == Decimal("0.00012")


def test_types_parquet_cannot_hold_natively_keep_their_exact_text(pg_database: str, store: SnapshotStore) -> None:
    """INTERVAL (no Parquet type) and json/jsonb snapshot as the server's exact text, uuid as its 16
    bytes; NULLs kept."""
    sql(
        pg_database,
        "CREATE TABLE odd (id int PRIMARY KEY, day date, span interval, doc jsonb, raw json, ident uuid)",
        "INSERT INTO odd VALUES (1, '2024-03-10', '1 year 2 mons 3 days 04:05:06.789', '{\"b\": [1, 2.5]}',"
        " '{\"z\":  1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), (2, '2024-03-10', NULL, NULL, NULL, NULL)",
    )
    table = snapshot_table(
        pg_database, store,
        "SELECT id, span, doc, raw, ident FROM odd WHERE day >= :partition_start AND day < :partition_end",
    )
    assert table.schema.field("span").type == pa.string()
    r1, r2 = table.to_pylist()
    assert r1["span"] == "1 year 2 mons 3 days 04:05:06.789"
    assert json.loads(r1["doc"]) == {"b": [1, 2.5]}
    assert r1["raw"] == '{"z":  1}'  # json keeps its text as written
    assert r1["ident"] == bytes.fromhex("a0eebc999c0b4ef8bb6d6bb9bd380a11")  # uuid: its 16 bytes
    assert all(r2[c] is None for c in ("span", "doc", "raw", "ident"))


def test_numeric_nan_in_a_constrained_column_is_a_clear_source_error(
    pg_database: str, store: SnapshotStore
) -> None:
    """NUMERIC(p,s) accepts 'NaN', which decimal128 cannot hold: the read must fail as a SourceError that
    names the column (not a bare pyarrow error), and nothing is published."""
    sql(
        pg_database,
        "CREATE TABLE nans (id int PRIMARY KEY, day date, amount numeric(15, 2))",
        "INSERT INTO nans VALUES (1, '2024-03-10', 'NaN'), (2, '2024-03-10', 1.5)",
    )
    catalog = make_catalog(
        pg_database,
        "SELECT id, amount FROM nans WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    with pytest.raises(SourceError, match="amount"):
        take_snapshot(catalog, "snap", DAY, store)
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []


# ---------------------------------------------------------------- window binding


def test_half_open_window_on_a_date_column(pg_database: str, store: SnapshotStore) -> None:
    db = pg_database.rsplit("/", 1)[1]
    # a database whose default time zone is far from UTC: the window must still be UTC days
    sql(
        pg_database,
        f"ALTER DATABASE \"{db}\" SET timezone TO 'Pacific/Kiritimati'",
        "CREATE TABLE events (id int PRIMARY KEY, day date NOT NULL)",
        "INSERT INTO events VALUES (1, '2024-03-09'), (2, '2024-03-10'), (3, '2024-03-10'), (4, '2024-03-11')",
    )
    catalog = make_catalog(
        pg_database,
        "SELECT id, day FROM events WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    outcome = take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.column("id").to_pylist() == [2, 3]
    assert outcome.result.manifest.params == {
        "partition_start": "2024-03-10T00:00:00+00:00",
        "partition_end": "2024-03-11T00:00:00+00:00",
    }
    assert outcome.result.manifest.window == {
        "start": "2024-03-10T00:00:00+00:00",
        "end": "2024-03-11T00:00:00+00:00",
    }


def test_half_open_window_on_a_timestamptz_column(pg_database: str, store: SnapshotStore) -> None:
    db = pg_database.rsplit("/", 1)[1]
    sql(
        pg_database,
        f"ALTER DATABASE \"{db}\" SET timezone TO 'America/Los_Angeles'",
        "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL)",
        """
        INSERT INTO events VALUES
          (1, '2024-03-09 23:59:59.999999+00'),  -- just before the start: out
          (2, '2024-03-10 00:00:00+00'),         -- exactly the start: in
          (3, '2024-03-10 01:00:00+01:00'),      -- = 00:00 UTC: in
          (4, '2024-03-10 00:30:00+01:00'),      -- = 03-09 23:30 UTC: out
          (5, '2024-03-10 23:59:59.999999+00'),  -- last microsecond: in
          (6, '2024-03-11 00:30:00+01:00'),      -- = 03-10 23:30 UTC: in
          (7, '2024-03-11 00:00:00+00'),         -- exactly the end: out
          (8, '2024-03-10 19:00:00-05:00')       -- = 03-11 00:00 UTC, the end: out
        """,
    )
    table = snapshot_table(
        pg_database, store,
        "SELECT id, at FROM events WHERE at >= :partition_start AND at < :partition_end",
    )
    assert table.column("id").to_pylist() == [2, 3, 5, 6]
    assert table.column("at").to_pylist() == [
        dt.datetime(2024, 3, 10, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 10, 0, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 10, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2024, 3, 10, 23, 30, tzinfo=UTC),
    ]


def test_half_open_window_on_a_timestamp_column_is_read_as_utc(pg_database: str, store: SnapshotStore) -> None:
    """``timestamp`` (no zone) values are compared with the UTC window, whatever the database's zone."""
    db = pg_database.rsplit("/", 1)[1]
    sql(
        pg_database,
        f"ALTER DATABASE \"{db}\" SET timezone TO 'Asia/Kolkata'",
        "CREATE TABLE events (id int PRIMARY KEY, at timestamp NOT NULL)",
        """
        INSERT INTO events VALUES
          (1, '2024-03-09 23:59:59.999999'), (2, '2024-03-10 00:00:00'),
          (3, '2024-03-10 23:59:59.999999'), (4, '2024-03-11 00:00:00')
        """,
    )
    table = snapshot_table(
        pg_database, store,
        "SELECT id, at FROM events WHERE at >= :partition_start AND at < :partition_end",
    )
    assert table.column("id").to_pylist() == [2, 3]
    assert table.column("at").to_pylist()[0] == dt.datetime(2024, 3, 10)


# ---------------------------------------------------------------- determinism


def test_same_rows_in_another_physical_order_give_the_same_version(
    pg_database: str, tmp_path: Path
) -> None:
    rows = [(i, f"name-{i:05d}", i * 0.5) for i in range(1, 20_001)]
    sql(pg_database, "CREATE TABLE people (id int, day date, name text, score float8)")

    def load(order: list[tuple]) -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("TRUNCATE people")
            with conn.cursor().copy("COPY people FROM STDIN") as copy:
                for r in order:
                    copy.write_row((r[0], "2024-03-10", r[1], r[2]))

    catalog = make_catalog(
        pg_database,
        "SELECT id, name, score FROM people WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    store = SnapshotStore(tmp_path / "one")
    load(rows)
    first = take_snapshot(catalog, "snap", DAY, store).result
    load(list(reversed(rows)))
    assert sql(pg_database, "SELECT id FROM people LIMIT 1") == [(20_000,)]  # physically reversed
    again = take_snapshot(catalog, "snap", DAY, store).result
    load(rows[1::2] + rows[0::2])
    elsewhere = take_snapshot(catalog, "snap", DAY, SnapshotStore(tmp_path / "two")).result

    assert first.created and not again.created
    assert again.version == first.version == elsewhere.version
    assert len(store.versions("snap", DAY)) == 1
    assert store.read_table("snap", DAY).column("id").to_pylist() == list(range(1, 20_001))


# ---------------------------------------------------------------- manifest


def test_manifest_records_source_without_secrets_and_the_snapshot_state(
    pg_database: str, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # trust auth ignores the password, so a URL with one still connects: it must appear nowhere
    secret = "s3cr3t-Passw0rd"
    monkeypatch.setenv("SP_TEST_PG_URL", reader_url(pg_database, password=secret))
    sql(
        pg_database,
        "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t VALUES (1, '2024-03-10')",
    )
    catalog = make_catalog(
        {"env": "SP_TEST_PG_URL"},
        "SELECT id FROM t WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    outcome = take_snapshot(catalog, "snap", DAY, store)
    manifest = store.read_manifest("snap", DAY, outcome.result.version)

    source = manifest.source
    assert source["kind"] == "postgres"
    assert source["host"] == "127.0.0.1"
    assert source["database"] == pg_database.rsplit("/", 1)[1]
    state = manifest.source_state
    assert {"snapshot", "xmin", "wal_lsn"} <= set(state)
    xmin, xmax = (int(x) for x in state["snapshot"].split(":")[:2])
    assert state["xmin"] == xmin <= xmax
    assert "/" in state["wal_lsn"]  # e.g. 0/2A1A9A8
    assert manifest.dagster_run_id is None
    assert manifest.row_count == 1

    stored = (Path(store.root.path) / "snapshots" / "snap" / DAY / outcome.result.version / "manifest.json")
    assert secret not in stored.read_text()
    assert secret not in json.dumps(manifest, default=str)
    assert "password" not in json.dumps(source).lower()


# ---------------------------------------------------------------- read-only session


def test_a_query_that_deletes_fails_and_changes_nothing(pg_database: str, store: SnapshotStore) -> None:
    sql(
        pg_database,
        "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10')",
    )
    catalog = make_catalog(
        pg_database,
        "WITH d AS (DELETE FROM t RETURNING *) "
        "SELECT id FROM d WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    with pytest.raises(SourceError):
        take_snapshot(catalog, "snap", DAY, store)
    assert sql(pg_database, "SELECT count(*) FROM t") == [(2,)]
    assert store.partitions("snap") == []


def test_a_write_hidden_in_a_function_is_refused_by_the_read_only_transaction(
    pg_database: str, store: SnapshotStore
) -> None:
    """The wrapped CTE above fails for a syntactic reason too; a volatile function's DELETE and a
    nextval() reach the server's read-only guard itself (SQLSTATE 25006), here as the superuser
    (allow_privileged_role), which has every privilege the guard must stand in for."""
    sql(
        pg_database,
        "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10')",
        "CREATE SEQUENCE s",
        "CREATE FUNCTION purge() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM t RETURNING 1'",
    )
    for query in (
        "SELECT id, purge() AS p FROM t WHERE day >= :partition_start AND day < :partition_end",
        "SELECT id, nextval('s') AS n FROM t WHERE day >= :partition_start AND day < :partition_end",
        "SELECT id, set_config('transaction_read_only', 'off', true) AS x FROM t "
        "WHERE day >= :partition_start AND day < :partition_end",
    ):
        catalog = make_catalog(pg_database, query, ["id"], allow_privileged_role=True)
        with pytest.raises(SourceError) as info:
            take_snapshot(catalog, "snap", DAY, store)
        assert info.value.code in {"25006", "25001"}, str(info.value)
        assert not info.value.transient
    assert sql(pg_database, "SELECT count(*) FROM t") == [(2,)]
    assert sql(pg_database, "SELECT last_value, is_called FROM s") == [(1, False)]
    assert store.partitions("snap") == []


# ---------------------------------------------------------------- statement timeout


def test_statement_timeout_fails_fast_and_says_so(pg_database: str, store: SnapshotStore) -> None:
    catalog = make_catalog(
        pg_database,
        "SELECT 1 AS id FROM pg_sleep(30) "
        "WHERE :partition_start::timestamptz IS NOT NULL AND :partition_end::timestamptz IS NOT NULL",
        ["id"],
        statement_timeout_s=1,
    )
    started = time.monotonic()
    with pytest.raises(SourceError, match="(?i)statement timeout") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=lambda s: pytest.fail("a timeout must not be retried"))
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"took {elapsed:.1f}s: the 1s timeout did not cancel pg_sleep(30)"
    assert info.value.code == "57014"
    assert not info.value.transient


# ---------------------------------------------------------------- hostile values


def test_quoted_table_and_key_names_are_quoted_not_injected(pg_database: str, store: SnapshotStore) -> None:
    sql(
        pg_database,
        'CREATE TABLE "odd ""table""" ("we""ird" int PRIMARY KEY, "Day; DROP" date, v text)',
        'INSERT INTO "odd ""table""" VALUES'
        " (3, '2024-03-10', 'c'), (1, '2024-03-10', 'a'), (2, '2024-03-10', 'b'), (4, '2024-03-11', 'd')",
    )
    catalog = make_catalog(
        pg_database,
        'SELECT "we""ird", v FROM "odd ""table""" '
        'WHERE "Day; DROP" >= :partition_start AND "Day; DROP" < :partition_end',
        ['we"ird'],
    )
    take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.column_names == ['we"ird', "v"]
    assert table.column('we"ird').to_pylist() == [1, 2, 3]
    assert table.column("v").to_pylist() == ["a", "b", "c"]


def test_a_key_naming_a_missing_column_cannot_break_out_of_the_order_by(
    pg_database: str, store: SnapshotStore
) -> None:
    sql(pg_database, "CREATE TABLE t (id int PRIMARY KEY, day date)", "INSERT INTO t VALUES (1, '2024-03-10')")
    catalog = make_catalog(
        pg_database,
        "SELECT id FROM t WHERE day >= :partition_start AND day < :partition_end",
        ['id"; DROP TABLE t; --'],
    )
    with pytest.raises(SourceError):
        take_snapshot(catalog, "snap", DAY, store)
    assert sql(pg_database, "SELECT count(*) FROM t") == [(1,)]


def test_the_sql_sent_holds_only_the_windows_own_timestamp_literals(
    pg_database: str, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY takes no bind parameters: the window's bounds reach the server as typed literals that the
    program rendered from its own datetimes. Every statement of a real read is recorded: the query's
    text is the catalog's with exactly its two placeholders replaced (those inside a string literal
    and a comment untouched), and no statement holds a catalog value (name, partition key, URL)."""
    from snapshot_platform.sources.postgres import PostgresSource

    sent: list[str] = []
    real_cursor = PostgresSource._cursor

    class Recording:
        def __init__(self, cur: Any):
            self._cur = cur

        def execute(self, operation: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(operation)
            return self._cur.execute(operation, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cur, name)

    monkeypatch.setattr(PostgresSource, "_cursor", lambda self, conn: Recording(real_cursor(self, conn)))
    sql(pg_database, "CREATE TABLE t (id int PRIMARY KEY, day date, note text)",
        "INSERT INTO t VALUES (1, '2024-03-10', 'a'), (2, '2024-03-10', ':partition_end'), (3, '2024-03-11', 'c')")
    query = ("SELECT id, note FROM t -- up to :partition_end\n"
             "WHERE day >= :partition_start AND day < :partition_end AND note <> ':partition_start'")
    catalog = make_catalog(pg_database, query, ["id"], name="nightly_orders_q7")
    take_snapshot(catalog, "nightly_orders_q7", DAY, store)
    assert store.read_table("nightly_orders_q7", DAY).column("id").to_pylist() == [1, 2]

    start, end = "TIMESTAMPTZ '2024-03-10 00:00:00.000000+00'", "TIMESTAMPTZ '2024-03-11 00:00:00.000000+00'"
    with_query = [s for s in sent if "FROM t --" in s]
    assert len(with_query) == 2  # the probe of the result's types, then the ordered query
    for statement in with_query:
        assert statement.count(start) == 1 and statement.count(end) == 1
        assert query.replace(":partition_start AND", f"{start} AND").replace(
            ":partition_end AND", f"{end} AND") in statement
    for statement in sent:
        for value in ("nightly_orders_q7", DAY + "'", pg_database.rsplit("/", 1)[1], "2024-03-10T"):
            assert value not in statement
        if statement not in with_query:
            assert "2024-03" not in statement and "TIMESTAMPTZ" not in statement


@pytest.mark.parametrize(
    "partition_key",
    [
        "2024-01-01'; DROP TABLE t; --",
        "2024-03-10' OR '1'='1",
        "'); DROP TABLE t; --",
        "2024-03-10 00:00:00+00'::timestamptz; DROP TABLE t; --",
        "../2024-03-10",
    ],
)
def test_hostile_partition_keys_are_rejected(pg_database: str, store: SnapshotStore, partition_key: str) -> None:
    sql(pg_database, "CREATE TABLE t (id int PRIMARY KEY, day date)", "INSERT INTO t VALUES (1, '2024-03-10')")
    catalog = make_catalog(
        pg_database,
        "SELECT id FROM t WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    with pytest.raises(ValueError):
        take_snapshot(catalog, "snap", partition_key, store)
    assert sql(pg_database, "SELECT to_regclass('public.t') IS NOT NULL, (SELECT count(*) FROM t)") == [(True, 1)]
    assert store.assets() == []


# ---------------------------------------------------------------- connection failures


def test_an_unreachable_server_fails_quickly_without_a_retry_storm(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "n0t-in-errors"
    monkeypatch.setenv("SP_TEST_PG_URL", f"postgresql://postgres:{secret}@127.0.0.1:1/nowhere")
    catalog = make_catalog(
        {"env": "SP_TEST_PG_URL"},
        "SELECT 1 AS id WHERE :partition_start::date IS NOT NULL AND :partition_end::date IS NOT NULL",
        ["id"],
        connect_timeout_s=2,
        max_attempts=3,
    )
    sleeps: list[float] = []
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=sleeps.append)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    # either not retried at all, or a bounded number of attempts
    assert (not info.value.transient and sleeps == []) or len(sleeps) <= catalog.sources["pg"].max_attempts - 1
    assert "connect" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(info.value.args)
    assert store.assets() == []


def test_a_session_killed_mid_read_is_retried_from_the_partition_start(
    pg_database: str, store: SnapshotStore
) -> None:
    """A terminated backend (SQLSTATE 57P01, transient) while rows stream: one retry, complete rows."""
    import threading

    sql(
        pg_database,
        "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t SELECT g, '2024-03-10' FROM generate_series(1, 4) g",
    )
    catalog = make_catalog(
        pg_database,
        "SELECT id, pg_sleep(0.4)::text AS slept FROM t WHERE day >= :partition_start AND day < :partition_end",
        ["id"],
    )
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_reader() -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            while not stop.is_set() and not killed:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'snapshot_platform'"
                    " AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
                ).fetchall()
                for (pid,) in rows:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
                time.sleep(0.05)

    killer = threading.Thread(target=kill_first_reader, daemon=True)
    killer.start()
    sleeps: list[float] = []
    try:
        outcome = take_snapshot(catalog, "snap", DAY, store, sleep=sleeps.append)
    finally:
        stop.set()
        killer.join(10)
    assert len(killed) == 1
    assert outcome.attempts == 2 and len(sleeps) == 1
    assert store.read_table("snap", DAY).column("id").to_pylist() == [1, 2, 3, 4]
    assert len(store.versions("snap", DAY)) == 1


def test_a_cli_snapshot_does_not_import_pandas(pg_database: str, tmp_path: Path) -> None:
    """pyarrow imports pandas (0.25 s of start-up) at its first conversion of a Python value or
    to_numpy, and ADBC's DB-API module through pyarrow.dataset: a `snapshot-platform snapshot` of a
    PostgreSQL partition (a NULL in the key hash, a bound session parameter, the checks) does neither.
    The catalog is JSON, so the process also leaves out what only YAML needs."""
    import json
    import subprocess
    import sys

    sql(pg_database, "CREATE TABLE t (id int8 PRIMARY KEY, day date, amount numeric(12, 2), note text)",
        "INSERT INTO t SELECT g, DATE '2024-03-10', g / 7.0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' END"
        " FROM generate_series(1, 5000) g")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({
        "sources": {"pg": {"kind": "postgres", "url": reader_url(pg_database)}},
        "snapshots": {"snap": {"source": "pg", "key": ["id", "note"], "not_null": ["id"],
                               "query": "SELECT * FROM t WHERE day >= :partition_start AND day < :partition_end",
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    }))
    script = ("import sys\nfrom snapshot_platform.cli import main\n"
              "try:\n    main(['snapshot', 'snap', '2024-03-10', '--json'])\n"
              "except SystemExit as e:\n    code = e.code\n"
              "print('pandas imported' if 'pandas' in sys.modules else 'no pandas', file=sys.stderr)\n"
              "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SNAPSHOT_PLATFORM_CATALOG": str(catalog),
                               "SNAPSHOT_PLATFORM_STORAGE_URL": str(tmp_path / "storage"),
                               "SNAPSHOT_PLATFORM_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["row_count"] == 5000
    assert proc.stderr.strip().splitlines()[-1] == "no pandas"


def test_a_driver_that_does_not_report_column_types_is_refused_before_anything_is_published(
    pg_database: str, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adbc-driver-postgresql before 1.13 reports no ``POSTGRESQL:type`` on the columns it decodes
    itself (int8, date...), and the plan would have sent them as text. The real server and read, with
    the result schemas stripped of that metadata as such a driver reports them: the snapshot fails
    naming the column and the release to install, and no version is published."""
    from snapshot_platform.sources import adbc_client

    sql(pg_database, "CREATE TABLE typed (id int8 PRIMARY KEY, day date, amount numeric(12, 2))",
        "INSERT INTO typed VALUES (1, '2024-03-10', 1.5)")
    real = adbc_client.Cursor.fetch_arrow_table

    def as_an_older_driver(self: Any) -> pa.Table:
        table = real(self)
        return table.cast(pa.schema([pa.field(f.name, f.type) for f in table.schema]))

    monkeypatch.setattr(adbc_client.Cursor, "fetch_arrow_table", as_an_older_driver)
    query = "SELECT * FROM typed WHERE day >= :partition_start AND day < :partition_end"
    catalog = make_catalog(pg_database, query, ["id"])
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store)
    assert info.value.code == "driver" and not info.value.transient
    assert "column 'id'" in str(info.value) and "adbc-driver-postgresql 1.13 or later" in str(info.value)
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []
    monkeypatch.undo()  # the same read with the installed driver keeps the types
    kept = snapshot_table(pg_database, store, query).schema.types
    assert kept == [pa.int64(), pa.date32(), pa.decimal128(12, 2)]
