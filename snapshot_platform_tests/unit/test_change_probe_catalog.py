"""``change_probe`` in the catalog (errors name the file, the entry and the field) and a SQLite probe
read in the same session as the data."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from snapshot_platform.capture import take_snapshot
from snapshot_platform.catalog import load_catalog, parse_catalog
from snapshot_platform.sources import Window, make_source
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.unit.test_catalog import assert_names, catalog_error, mutated, write_catalog

PROBE = "SELECT count(*) AS n FROM customer_data WHERE signup_date >= :partition_start AND signup_date < :partition_end"


def _probe(**probe: object) -> object:
    return lambda d: d["snapshots"]["customer_data"].update(change_probe=probe)


def test_a_change_probe_loads(tmp_path: Path) -> None:
    spec = load_catalog(write_catalog(tmp_path, mutated(_probe(query=PROBE, lookback=3)))).snapshots["customer_data"]
    assert spec.change_probe.query == PROBE and spec.change_probe.lookback == 3
    assert load_catalog(write_catalog(tmp_path, mutated(_probe(query=PROBE)))).snapshots[
        "customer_data"].change_probe.lookback == 7


@pytest.mark.parametrize("probe, field, needle", [
    ({"query": PROBE, "lookbak": 3}, "change_probe.lookbak", "unknown field"),
    ({"query": PROBE, "lookback": 0}, "change_probe.lookback", "greater than or equal to 1"),
    ({"query": "SELECT count(*) FROM t WHERE d < :partition_end"}, "change_probe", ":partition_start"),
    ({"query": PROBE + " AND x = :other"}, "change_probe", "unknown parameters :other"),
    ({"lookback": 3}, "change_probe.query", "Field required"),
])
def test_change_probe_errors_name_the_file_entry_and_field(tmp_path: Path, probe: dict, field: str, needle: str) -> None:
    path = write_catalog(tmp_path, mutated(_probe(**probe)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", field)
    assert needle in msg, msg


def test_an_engine_without_probes_refuses_one_in_the_catalog(tmp_path: Path) -> None:
    def redshift(d: dict) -> None:
        d["sources"]["warehouse"] = {"kind": "redshift", "url": {"env": "REDSHIFT_URL"}}
        d["snapshots"]["customer_data"]["change_probe"] = {"query": PROBE}

    path = write_catalog(tmp_path, mutated(redshift))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "change_probe")
    assert "not supported on a redshift source" in msg


def test_a_sqlite_probe_is_recorded_with_the_version(tmp_path: Path) -> None:
    db = tmp_path / "prod.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d TEXT, u TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, "2024-02-01 10:00:00", "a"), (2, "2024-02-01 11:00:00", "b")])
    window_sql = "d >= :partition_start AND d < :partition_end"
    catalog = parse_catalog({
        "sources": {"lite": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {"s": {"source": "lite", "query": f"SELECT id FROM t WHERE {window_sql}", "key": ["id"],
                            "change_probe": {"query": f"SELECT count(*) AS n, max(u) AS u FROM t WHERE {window_sql}"},
                            "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })
    utc = dt.timezone.utc
    window = Window(dt.datetime(2024, 2, 1, tzinfo=utc), dt.datetime(2024, 2, 2, tzinfo=utc))
    source = make_source("lite", catalog.sources["lite"])
    m = take_snapshot(catalog.snapshots["s"], source, window, SnapshotStore(str(tmp_path / "storage")),
                      name="s", partition_key="2024-02-01").result.manifest
    assert m.source_fingerprint == {"n": 2, "u": "b"}
    assert source.fingerprint(catalog.snapshots["s"].change_probe.query, window) == {"n": 2, "u": "b"}
