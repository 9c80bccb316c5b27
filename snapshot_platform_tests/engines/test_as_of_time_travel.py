"""``mode: as_of`` on engines with time travel: a query using ``:snapshot_time`` binds the partition's
end (not the server's time), so a past partition's state is read as it was then: not late, no
``--accept-late``, ``read_at`` == the end, ``source_state.pinned`` and ``snapshot_time``.

BigQuery against the local-bigquery emulator, which honours ``FOR SYSTEM_TIME AS OF`` (DuckLake
snapshots): rows inserted after the end are not read. An end before the table's first state is the
emulator's stand-in for an instant beyond the time-travel retention. Snowflake against fakesnow,
which has no time travel: the bound value is selected as a column and compared with the end.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import snowflake.connector

from snapshot_platform.capture import LateReadError
from snapshot_platform.catalog import parse_catalog
from snapshot_platform.sources import Window
from snapshot_platform.sources.snowflake import _beyond_time_travel
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.capture_runs import take_snapshot

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)


def _catalog(source: dict[str, Any], query: str, key: str, **snapshot: Any) -> Any:
    return parse_catalog({
        "sources": {"db": source},
        "snapshots": {"snap": {"source": "db", "mode": "as_of", "query": query, "key": [key],
                               "partitions": {"cadence": "hourly", "start": "2024-01-01"}, **snapshot}},
    })


# ---------------------------------------------------------------- BigQuery (emulator)


@pytest.fixture
def bq(bigquery_emulator: Any) -> dict[str, Any]:
    """A table holding id 1 before ``end`` and id 2 inserted after it (a late-arriving row dated
    before the end); the source's catalog entry."""
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    table = f"{bigquery_emulator.project}.{bigquery_emulator.dataset}.asof_{uuid.uuid4().hex[:8]}"
    client.create_table(bigquery.Table(table, schema=[bigquery.SchemaField("id", "INT64"),
                                                       bigquery.SchemaField("at", "TIMESTAMP")]))
    assert client.insert_rows_json(table, [{"id": 1, "at": "2024-01-01T00:00:00Z"}]) == []
    time.sleep(1.0)
    end = dt.datetime.now(UTC).replace(microsecond=0) + dt.timedelta(seconds=1)  # after id 1 is in
    time.sleep(max(0.0, (end - dt.datetime.now(UTC)).total_seconds()) + 1.0)
    assert client.insert_rows_json(table, [{"id": 2, "at": "2024-01-01T00:00:00Z"}]) == []  # after the end
    client.close()
    source = {"kind": "bigquery", "project": bigquery_emulator.project, "anonymous": True,
              "api_endpoint": bigquery_emulator.api_endpoint,
              "storage_api_endpoint": bigquery_emulator.storage_api_endpoint, "statement_timeout_s": 60}
    return {"table": table, "end": end, "source": source}


def test_bigquery_as_of_reads_the_tables_as_of_the_partition_end(bq: dict[str, Any], tmp_path: Path) -> None:
    query = f"SELECT id FROM `{bq['table']}` FOR SYSTEM_TIME AS OF :snapshot_time WHERE at < :partition_end"
    store = SnapshotStore(tmp_path / "storage")
    end = bq["end"]
    window = Window(end - HOUR, end)
    # max_lag 1s: the end is already more than a second ago, so a read of "now" would be late
    catalog = _catalog(bq["source"], query, "id", max_lag="1s")
    m = take_snapshot(catalog, "snap", "p", store, window=window).result.manifest
    assert store.read_table("snap", "p", m.version).column("id").to_pylist() == [1]  # id 2 came after the end
    assert m.late is False and m.as_of == end.isoformat() and m.read_at == end.isoformat()
    state = m.source_state
    assert state["pinned"] is True and state["snapshot_time"] == end.isoformat()
    assert dt.datetime.fromisoformat(state["server_time"]) > end + dt.timedelta(seconds=1)

    # the same query without :snapshot_time reads now: late, refused, then accepted with both rows
    unpinned = _catalog(bq["source"], f"SELECT id FROM `{bq['table']}` WHERE at < :partition_end", "id",
                        max_lag="1s")
    with pytest.raises(LateReadError, match="refusing a late read") as refused:
        take_snapshot(unpinned, "snap", "q", store, window=window)
    assert refused.value.code == "late_read"


def test_bigquery_as_of_beyond_time_travel_is_one_clear_error(bq: dict[str, Any], tmp_path: Path) -> None:
    query = f"SELECT id FROM `{bq['table']}` FOR SYSTEM_TIME AS OF :snapshot_time WHERE at < :partition_end"
    store = SnapshotStore(tmp_path / "storage")
    catalog = _catalog(bq["source"], query, "id")
    with pytest.raises(LateReadError) as caught:  # 2024: before the table's first state in the emulator
        take_snapshot(catalog, "snap", "2024-03-10-00:00", store)
    text = str(caught.value)
    assert caught.value.code == "beyond_time_travel" and not caught.value.transient
    assert text.startswith("snapshot snap/2024-03-10-00:00 (mode: as_of): source db:")
    assert "2024-03-10T01:00:00+00:00" in text and "max_time_travel_hours" in text and "--accept-late" in text
    assert store.versions("snap", "2024-03-10-00:00") == []


def test_bigquery_as_of_refuses_an_end_not_reached(bq: dict[str, Any], tmp_path: Path) -> None:
    query = f"SELECT id FROM `{bq['table']}` FOR SYSTEM_TIME AS OF :snapshot_time WHERE at < :partition_end"
    store = SnapshotStore(tmp_path / "storage")
    end = dt.datetime.now(UTC).replace(microsecond=0) + HOUR
    with pytest.raises(LateReadError, match="before the instant to read as of .*does not exist yet") as caught:
        take_snapshot(_catalog(bq["source"], query, "id"), "snap", "p", store, window=Window(end - HOUR, end))
    assert caught.value.code == "as_of_not_reached" and "snapshot snap/p (mode: as_of)" in str(caught.value)
    assert store.versions("snap", "p") == []


# ---------------------------------------------------------------- Snowflake (fakesnow)


@pytest.fixture
def snow(fakesnow_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("SP_TEST_SNOWFLAKE_PASSWORD", fakesnow_server["password"])
    db = f"SP_{uuid.uuid4().hex[:8].upper()}"
    conn = snowflake.connector.connect(**fakesnow_server)
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE {db}")
    cur.execute(f"CREATE SCHEMA {db}.S1")
    cur.execute(f"CREATE TABLE {db}.S1.events (id NUMBER(10,0), ts TIMESTAMP_TZ)")
    cur.execute(f"INSERT INTO {db}.S1.events VALUES (1, '2024-01-01 00:00:00+00:00'), (2, '2024-01-01 00:00:00+00:00')")
    conn.close()
    server = fakesnow_server
    return {"kind": "snowflake", "account": server["account"], "user": server["user"],
            "password": {"env": "SP_TEST_SNOWFLAKE_PASSWORD"}, "host": server["host"], "port": server["port"],
            "protocol": server["protocol"], "database": db, "schema": "S1", "warehouse": "SNAP_WH",
            "statement_timeout_s": 20}


def test_snowflake_as_of_binds_the_partition_end(snow: dict[str, Any], tmp_path: Path) -> None:
    """fakesnow has no time travel: the bound instant is selected as a column, so the test sees what
    the server received (TIMESTAMP_NTZ holding UTC)."""
    query = "SELECT id, :snapshot_time AS pinned_at FROM events WHERE ts < :partition_end"
    store = SnapshotStore(tmp_path / "storage")
    m = take_snapshot(_catalog(snow, query, "ID"), "snap", "2024-03-10-05:00", store).result.manifest  # long ago
    end = dt.datetime(2024, 3, 10, 6, tzinfo=UTC)
    table = store.read_table("snap", "2024-03-10-05:00", m.version)
    assert {p.replace(tzinfo=UTC) for p in table.column("PINNED_AT").to_pylist()} == {end}
    assert m.late is False and m.read_at == end.isoformat() and m.as_of == end.isoformat()
    assert m.source_state["pinned"] is True and m.source_state["snapshot_time"] == end.isoformat()
    assert dt.datetime.fromisoformat(m.source_state["server_time"]) > end + dt.timedelta(days=300)

    future = dt.datetime.now(UTC).replace(microsecond=0) + HOUR
    with pytest.raises(LateReadError, match="does not exist yet") as caught:
        take_snapshot(_catalog(snow, query, "ID"), "snap", "f", store, window=Window(future - HOUR, future))
    assert caught.value.code == "as_of_not_reached" and store.versions("snap", "f") == []


def test_snowflake_as_of_without_snapshot_time_keeps_the_late_rule(snow: dict[str, Any], tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "storage")
    with pytest.raises(LateReadError, match="refusing a late read"):
        take_snapshot(_catalog(snow, "SELECT id FROM events WHERE ts < :partition_end", "ID"), "snap", "2024-03-10-05:00", store)
    assert store.versions("snap", "2024-03-10-05:00") == []


def test_snowflake_time_travel_refusal_is_recognised() -> None:
    """Snowflake's error 707 (not produced by fakesnow): what the source turns into the one
    beyond-retention error; other errors are left as they are."""
    from snowflake.connector.errors import ProgrammingError

    assert _beyond_time_travel(ProgrammingError(
        msg="Time travel data is not available for table EVENTS. The requested time is either beyond the "
            "allowed time travel period or before the object creation time.", errno=707))
    assert not _beyond_time_travel(ProgrammingError(msg="Object 'EVENTS' does not exist", errno=2003))
