"""``parallelism: K`` against a real PostgreSQL server: one partition read over K connections inside
one exported snapshot gives the same rows, the same Parquet bytes and the same version id as one
connection; a change committed after the export is seen by no connection; a failing connection
cancels the others, leaks no session or thread, and a transient failure is retried from the start.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform.sources import SourceError
from snapshot_platform.sources import postgres_parallel
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform_tests.conftest import reader_url

pytestmark = pytest.mark.postgres

DAY = "2024-03-10"
QUERY = "SELECT * FROM events WHERE t >= :partition_start AND t < :partition_end"


def _catalog(url: str, k: int, key: list[str]) -> Catalog:
    return parse_catalog({
        "sources": {"pg": {"kind": "postgres", "url": reader_url(url), "parallelism": k,
                           "max_concurrent_queries": max(k, 2), "max_attempts": 2}},
        "snapshots": {"events": {"source": "pg", "query": QUERY, "key": key,
                                 "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


def _fill(url: str, rows: int) -> None:
    """``events``: ``rows`` rows in DAY (ids 1..rows, shuffled on disk) and a few on the day after;
    a nullable date ``d`` (NULL for every 7th row) and a text, numeric and timestamptz column."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, d date, t timestamptz NOT NULL,"
                     " amount numeric(12, 2), note text)")
        conn.execute(
            "INSERT INTO events SELECT i,"
            " CASE WHEN i %% 7 = 0 THEN NULL ELSE DATE '2024-01-01' + (i %% 50)::int END,"
            " TIMESTAMPTZ '2024-03-10 00:00:00+00' + (i %% 86400) * interval '1 second',"
            " (i %% 100000) / 100.0, md5(i::text)"
            " FROM generate_series(1, %s::bigint) AS i ORDER BY md5(i::text)",
            (rows,))
        conn.execute("INSERT INTO events SELECT i, NULL, TIMESTAMPTZ '2024-03-11 01:00:00+00', 1, 'next day'"
                     " FROM generate_series(%s::bigint, %s::bigint) AS i", (rows + 1, rows + 50))
        conn.execute("ANALYZE events")


def _snapshot(url: str, tmp_path: Path, k: int, key: list[str]) -> tuple[Any, SnapshotStore]:
    store = SnapshotStore(str(tmp_path / f"store-k{k}-{'-'.join(key)}"))
    return take_snapshot(_catalog(url, k, key), "events", DAY, store), store


def _snapshot_watched(url: str, store: SnapshotStore, k: int, progress: Any) -> Any:
    """A snapshot through capture.take_snapshot with ``progress`` (called by the writer's side)."""
    from snapshot_platform import capture
    from snapshot_platform.orchestration.partitions import window_for
    from snapshot_platform.sources import make_source

    catalog = _catalog(url, k, ["id"])
    spec = catalog.snapshots["events"]
    window = window_for(spec.partitions, DAY)
    return capture.take_snapshot(spec, make_source("pg", catalog.sources["pg"]), window, store,
                                 name="events", partition_key=DAY, progress=progress)


def _parts(manifest: Any) -> list[tuple[str, int, int]]:
    """Each Parquet part's sha256, size and rows (the store verifies the bytes against them on read)."""
    return [(f.sha256, f.bytes, f.rows) for f in manifest.files]


def _our_sessions(url: str) -> list[tuple]:
    db = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        return conn.execute("SELECT pid, state, query FROM pg_stat_activity WHERE datname = %s"
                            " AND application_name = 'snapshot_platform'", (db,)).fetchall()


def _range_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("snapshot-range-")]


def test_one_two_and_three_connections_give_the_same_bytes_and_version(pg_database: str,
                                                                        tmp_path: Path) -> None:
    _fill(pg_database, 200_000)  # enough for 3 connections of MIN_ROWS_PER_CONNECTION, split from a sample
    one, store1 = _snapshot(pg_database, tmp_path, 1, ["id"])
    m1 = one.result.manifest
    assert m1.row_count == 200_000 and "parallel_read" not in m1.source_state
    expected = store1.read_table("events", DAY)
    assert expected.column("id").to_pylist() == list(range(1, 200_001))
    for k in (2, 3):
        got, store = _snapshot(pg_database, tmp_path, k, ["id"])
        m = got.result.manifest
        assert m.source_state["parallel_read"] == {"connections": k, "split_column": "id"}
        assert m.version == m1.version
        assert _parts(m) == _parts(m1)
        assert store.read_table("events", DAY).equals(expected)
        # one marker, the coordinator's: the snapshot its workers imported
        assert m.source_state["snapshot"] and m.source_state["xmin"] > 0
    assert _our_sessions(pg_database) == [] and _range_threads() == []


@pytest.mark.parametrize("key", [["d", "id"], ["t", "id"]])
def test_a_key_split_on_its_first_column_with_nulls_keeps_the_order(
        pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: list[str]) -> None:
    """A two-column key is split on its first column (a date with NULLs, which sort last and are read
    by the last connection; a timestamptz): the concatenated ranges are the serial order."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 20_000)
    one, _ = _snapshot(pg_database, tmp_path, 1, key)
    three, store = _snapshot(pg_database, tmp_path, 3, key)
    assert three.result.manifest.source_state["parallel_read"]["connections"] == 3
    assert three.result.manifest.version == one.result.manifest.version
    table = store.read_table("events", DAY)
    first = table.column(key[0]).to_pylist()
    present = [v for v in first if v is not None]
    assert present == sorted(present) and first[len(present):] == [None] * (len(first) - len(present))


def test_a_first_key_column_without_a_literal_form_reads_over_one_connection(
        pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 5_000)
    one, _ = _snapshot(pg_database, tmp_path, 1, ["note"])
    with caplog.at_level("WARNING", logger=postgres_parallel.__name__):
        two, _ = _snapshot(pg_database, tmp_path, 2, ["note"])
    state = two.result.manifest.source_state["parallel_read"]
    assert state["connections"] == 1 and "'note' is text" in state["one_connection_because"]
    assert "parallelism 2, but this read uses one connection" in caplog.text
    assert two.result.manifest.version == one.result.manifest.version


def test_every_connection_reads_the_exported_snapshot(pg_database: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after the coordinator exported its snapshot (before any worker imported it), another
    session commits an insert in every range, an update and a delete: no connection sees them."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)
    before, _ = _snapshot(pg_database, tmp_path, 1, ["id"])
    changed: list[str] = []
    real_snapshot_id = postgres_parallel.snapshot_id

    def change_after_export(value: Any) -> str:
        if not changed:  # the coordinator's call, right after pg_export_snapshot()
            with psycopg.connect(pg_database, autocommit=True) as conn:
                conn.execute("INSERT INTO events SELECT i, NULL, TIMESTAMPTZ '2024-03-10 12:00:00+00', 0,"
                             " 'late' FROM unnest(ARRAY[-5, 20000]) AS i")  # in the first and the last range
                conn.execute("UPDATE events SET note = 'changed' WHERE id IN (10, 5000, 8990)")
                conn.execute("DELETE FROM events WHERE id IN (11, 5001, 8991)")
            changed.append(value)
        return real_snapshot_id(value)

    monkeypatch.setattr(postgres_parallel, "snapshot_id", change_after_export)
    three, store = _snapshot(pg_database, tmp_path, 3, ["id"])
    assert changed and three.result.manifest.source_state["parallel_read"]["connections"] == 3
    assert three.result.manifest.version == before.result.manifest.version
    table = store.read_table("events", DAY)
    assert "changed" not in table.column("note").to_pylist() and table.num_rows == 9_000
    # and the changes are real: a new read sees them
    after, _ = _snapshot(pg_database, tmp_path / "after", 3, ["id"])
    assert after.result.manifest.version != before.result.manifest.version


def test_a_failing_connection_fails_the_read_and_leaks_nothing(pg_database: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that cannot be kept exactly, in the last range only: the read fails naming its column
    (the worker's error, not the cancel of the others), nothing is published, and every connection
    and thread of the read is gone."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE events SET d = 'infinity' WHERE id = 8999")
    store = SnapshotStore(str(tmp_path / "store"))
    with pytest.raises(SourceError, match=r"column 'd' \(date\) holds infinity"):
        take_snapshot(_catalog(pg_database, 3, ["id"]), "events", DAY, store)
    assert store.partitions("events") == [] or store.versions("events", DAY) == []
    assert _our_sessions(pg_database) == [] and _range_threads() == []


def test_a_lost_worker_connection_is_retried_from_the_start(pg_database: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The server terminates a worker's session as its range query starts (57P01, transient): the
    attempt fails as a whole, the others are stopped, and the second attempt publishes the version a
    serial read gives."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)
    serial, _ = _snapshot(pg_database, tmp_path, 1, ["id"])
    killed: list[int] = []
    real_part = postgres_parallel._Worker._part

    def terminated(self: Any, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        if not killed:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            with psycopg.connect(pg_database, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            killed.append(pid)
        return real_part(self, cur, bound, key, plan)

    monkeypatch.setattr(postgres_parallel._Worker, "_part", terminated)
    store = SnapshotStore(str(tmp_path / "store"))
    started = time.monotonic()
    outcome = take_snapshot(_catalog(pg_database, 3, ["id"]), "events", DAY, store, sleep=lambda s: None)
    assert killed and outcome.attempts == 2
    assert outcome.result.manifest.version == serial.result.manifest.version
    # the first attempt's other connections were stopped, not waited out
    assert time.monotonic() - started < 60
    assert _our_sessions(pg_database) == [] and _range_threads() == []


def test_split_points_come_from_one_sample_of_the_snapshot(pg_database: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampled percentiles of a 200k-row read: a row estimate near the truth and split points in
    key order that cut it into near-equal ranges."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 200_000)
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(pg_database, autocommit=True) as conn, conn.cursor() as cur:
        bound = "SELECT * FROM events WHERE t < TIMESTAMPTZ '2024-03-11 00:00:00+00'"
        rows, points = postgres_parallel.split_points(cur, bound, "id", 4)
    assert 180_000 <= rows <= 220_000
    assert len(points) == 3 and points == sorted(points)
    for i, p in enumerate(points, start=1):
        assert abs(p - 50_000 * i) < 10_000, points


def test_rows_that_cannot_be_set_aside_fail_the_read_naming_the_folder(
        pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection ahead of the writer sets its rows aside in $TMPDIR; when that fails (here: the
    temporary folder is a file), the read fails saying where and what to do, and leaks nothing."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("")
    monkeypatch.setattr("tempfile.tempdir", str(not_a_folder))

    def slow_writer(rows: int, _bytes: int) -> None:
        if rows:  # the writer dwells on the first range: the second connection runs ahead
            time.sleep(0.5)

    store = SnapshotStore(str(tmp_path / "store"))
    with pytest.raises(SourceError, match=rf"set rows aside in the temporary folder {not_a_folder} "):
        _snapshot_watched(pg_database, store, 2, slow_writer)
    assert _our_sessions(pg_database) == [] and _range_threads() == []


def test_a_writer_that_gives_up_mid_stream_stops_every_connection(
        pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's side fails after the first batch (as a full disk would), while the other
    connections are still reading or waiting: the read ends, every connection and thread is gone,
    nothing is published."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)

    def give_up(rows: int, _bytes: int) -> None:
        if rows:
            raise RuntimeError("the writer gave up")

    store = SnapshotStore(str(tmp_path / "store"))
    with pytest.raises(RuntimeError, match="the writer gave up"):
        _snapshot_watched(pg_database, store, 3, give_up)
    assert _our_sessions(pg_database) == [] and _range_threads() == []
    assert store.partitions("events") == [] or store.versions("events", DAY) == []


def test_every_connection_has_the_serial_sessions_settings(pg_database: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker's session, as its range query is about to run: read-only REPEATABLE READ, the
    source's statement timeout, UTC, the application name, and the coordinator's snapshot."""
    monkeypatch.setattr(postgres_parallel, "MIN_ROWS_PER_CONNECTION", 1_000)
    _fill(pg_database, 9_000)
    seen: list[tuple] = []
    real_part = postgres_parallel._Worker._part

    def look(self: Any, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        cur.execute("SELECT current_setting('transaction_read_only'),"
                    " current_setting('transaction_isolation'),"
                    " (SELECT setting FROM pg_settings WHERE name = 'statement_timeout'),"
                    " current_setting('TimeZone'), current_setting('application_name'),"
                    " pg_current_snapshot()::text")
        seen.append(cur.fetchone())
        return real_part(self, cur, bound, key, plan)

    monkeypatch.setattr(postgres_parallel._Worker, "_part", look)
    three, _ = _snapshot(pg_database, tmp_path, 3, ["id"])
    snapshot = three.result.manifest.source_state["snapshot"]
    timeout_ms = int(_catalog(pg_database, 3, ["id"]).sources["pg"].statement_timeout_s * 1000)
    expected = ("on", "repeatable read", str(timeout_ms), "UTC", "snapshot_platform", snapshot)
    assert seen == [expected, expected]
