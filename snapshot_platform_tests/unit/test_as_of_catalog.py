"""``mode: as_of`` and ``max_lag`` in the catalog (errors name the file, the entry and the field), and
an as-of read of SQLite, whose ``read_at`` is the local clock (it has no server clock)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from snapshot_platform.capture import LateReadError, take_snapshot
from snapshot_platform.catalog import load_catalog, parse_catalog
from snapshot_platform.sources import Window, make_source
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.unit.test_catalog import assert_names, catalog_error, mutated, write_catalog

AS_OF_QUERY = "SELECT customer_id, signup_date FROM customer_data WHERE signup_date < :partition_end"


def _as_of(data: dict, **fields: object) -> None:
    data["snapshots"]["customer_data"].update({"mode": "as_of", "query": AS_OF_QUERY, **fields})


def test_an_as_of_entry_loads_and_its_max_lag_defaults_to_one_period(tmp_path: Path) -> None:
    spec = load_catalog(write_catalog(tmp_path, mutated(_as_of))).snapshots["customer_data"]
    assert spec.mode == "as_of" and spec.max_lag is None
    assert spec.max_lag_for(dt.timedelta(days=1)) == dt.timedelta(days=1)
    spec = load_catalog(write_catalog(tmp_path, mutated(lambda d: _as_of(d, max_lag="6h")))).snapshots["customer_data"]
    assert spec.max_lag_for(dt.timedelta(days=1)) == dt.timedelta(hours=6)
    default = load_catalog(write_catalog(tmp_path, mutated(lambda d: None))).snapshots["customer_data"]
    assert default.mode == "window"


@pytest.mark.parametrize("fields, field, needle", [
    ({"query": "SELECT * FROM t WHERE d >= :partition_start AND d < :partition_end"}, "query",
     "uses :partition_start, but mode: as_of"),
    ({"query": "SELECT * FROM t"}, "query", "must use :partition_end"),
    ({"query": "SELECT * FROM t WHERE d < :partition_end AND x = :other"}, "query", "unknown parameters :other"),
    ({"max_lag": "soon"}, "max_lag", "not a positive duration"),
    ({"max_lag": "0h"}, "max_lag", "not a positive duration"),
    ({"mode": "asof"}, "mode", "'window' or 'as_of'"),
])
def test_as_of_errors_name_the_file_entry_and_field(tmp_path: Path, fields: dict, field: str, needle: str) -> None:
    path = write_catalog(tmp_path, mutated(lambda d: _as_of(d, **fields)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", field)
    assert needle in msg, msg


def test_max_lag_belongs_to_as_of_and_a_window_query_still_needs_both_bounds(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(max_lag="1d")))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "max_lag")
    assert "applies to mode: as_of only" in msg
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=AS_OF_QUERY)))
    assert "must use the partition window parameters :partition_start" in catalog_error(path)


def test_sqlite_as_of_read_uses_the_local_clock(tmp_path: Path) -> None:
    db = tmp_path / "prod.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "2024-01-31 10:00:00"), (2, "2024-02-02 00:00:00")])
    catalog = parse_catalog({
        "sources": {"lite": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {"s": {"source": "lite", "mode": "as_of", "query": "SELECT id FROM t WHERE d < :partition_end",
                            "key": ["id"], "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })
    spec, store = catalog.snapshots["s"], SnapshotStore(str(tmp_path / "storage"))
    source = make_source("lite", catalog.sources["lite"])
    utc = dt.timezone.utc
    past = Window(dt.datetime(2024, 2, 1, tzinfo=utc), dt.datetime(2024, 2, 2, tzinfo=utc))
    with pytest.raises(LateReadError, match="refusing a late read"):
        take_snapshot(spec, source, past, store, name="s", partition_key="2024-02-01")
    before = dt.datetime.now(utc)
    m = take_snapshot(spec, source, past, store, name="s", partition_key="2024-02-01", accept_late=True).result.manifest
    assert m.late is True and m.row_count == 1 and m.as_of == "2024-02-02T00:00:00+00:00"
    assert before <= dt.datetime.fromisoformat(m.read_at) <= dt.datetime.now(utc)
    # a partition that ended a moment ago is not late; one that has not ended has no as-of state yet
    end = dt.datetime.now(utc).replace(microsecond=0) - dt.timedelta(seconds=1)
    recent = Window(end - dt.timedelta(days=1), end)
    m = take_snapshot(spec, source, recent, store, name="s", partition_key="recent").result.manifest
    assert m.late is False and m.row_count == 2
    future = Window(end, end + dt.timedelta(days=1))
    with pytest.raises(LateReadError, match="does not exist yet"):
        take_snapshot(spec, source, future, store, name="s", partition_key="future")
