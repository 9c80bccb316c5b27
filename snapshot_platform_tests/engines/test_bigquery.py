"""The BigQuery source against the local-bigquery emulator (REST and the Storage Read API over gRPC).

Exercised: google-cloud-bigquery's client against a real HTTP server, named query parameters for the
window (TIMESTAMP and DATE), ``FOR SYSTEM_TIME AS OF :snapshot_time`` pinned to the server's time at
the read's start and recorded, the dry run, results as Arrow over REST and through the Storage Read
API, the schema from the result's BigQuery schema, ``dagster asset materialize``. Not exercised, as
the emulator does not implement them: ``maximum_bytes_billed`` (it estimates 0 bytes and ignores the
limit), ``job_timeout_ms``, IAM permissions, and credentials (the emulator takes anonymous calls; the
service-account path is only shown to fail cleanly, in test_safety.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from snapshot_platform.catalog import CatalogError, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import dagster_materialize, published_manifests

UTC = dt.timezone.utc
DAY = "2024-03-10"


@pytest.fixture
def events_table(bigquery_emulator: Any) -> str:
    """A fresh table in the emulator with rows around the 2024-03-10 window; its full id."""
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    table_id = f"{bigquery_emulator.project}.{bigquery_emulator.dataset}.events_{uuid.uuid4().hex[:8]}"
    client.create_table(bigquery.Table(table_id, schema=[
        bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("at", "TIMESTAMP"),
        bigquery.SchemaField("day", "DATE"), bigquery.SchemaField("amount", "NUMERIC"),
        bigquery.SchemaField("big", "BIGNUMERIC"), bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("wall", "DATETIME"), bigquery.SchemaField("ok", "BOOL"),
        bigquery.SchemaField("score", "FLOAT64"), bigquery.SchemaField("raw", "BYTES"),
    ]))
    errors = client.insert_rows_json(table_id, [
        {"id": 2, "at": "2024-03-10T23:59:59.999999Z", "day": "2024-03-10", "amount": "0.01", "big": None,
         "name": "", "wall": None, "ok": False, "score": None, "raw": None},
        {"id": 1, "at": "2024-03-10T00:00:00Z", "day": "2024-03-10", "amount": "12345678901234567890.123456789",
         "big": "1.5", "name": "ünï", "wall": "2024-03-10T13:14:15.123456", "ok": True, "score": 0.1, "raw": "AAE="},
        {"id": 3, "at": "2024-03-09T23:59:59.999999Z", "day": "2024-03-09", "amount": "1", "big": None,
         "name": "before", "wall": None, "ok": None, "score": None, "raw": None},
        {"id": 4, "at": "2024-03-11T00:00:00Z", "day": "2024-03-11", "amount": "1", "big": None,
         "name": "after", "wall": None, "ok": None, "score": None, "raw": None},
    ])
    assert errors == []
    client.close()
    return table_id


def source_settings(emulator: Any, **extra: Any) -> dict[str, Any]:
    return {"kind": "bigquery", "project": emulator.project, "anonymous": True,
            "api_endpoint": emulator.api_endpoint, "storage_api_endpoint": emulator.storage_api_endpoint,
            "maximum_bytes_billed": 10**9, "statement_timeout_s": 60, **extra}


def make_catalog(settings: dict[str, Any], query: str) -> Any:
    return parse_catalog({
        "sources": {"bq": settings},
        "snapshots": {"snap": {"source": "bq", "query": query, "key": ["id"],
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


EXPECTED_SCHEMA = {
    "id": pa.int64(), "at": pa.timestamp("us", tz="UTC"), "day": pa.date32(), "amount": pa.decimal128(38, 9),
    "big": pa.decimal256(76, 38), "name": pa.string(), "wall": pa.timestamp("us"), "ok": pa.bool_(),
    "score": pa.float64(), "raw": pa.binary(),
}


@pytest.mark.parametrize("storage_api", [True, False], ids=["storage_read_api", "rest"])
def test_pinned_window_read_as_arrow(bigquery_emulator: Any, events_table: str, tmp_path: Path,
                                     storage_api: bool) -> None:
    query = (f"SELECT id, at, day, amount, big, name, wall, ok, score, raw"
             f" FROM `{events_table}` FOR SYSTEM_TIME AS OF :snapshot_time"
             f" WHERE at >= :partition_start AND at < :partition_end")
    store = SnapshotStore(tmp_path / "storage")
    settings = source_settings(bigquery_emulator, storage_api=storage_api)
    before = dt.datetime.now(UTC)
    m = take_snapshot(make_catalog(settings, query), "snap", DAY, store).result.manifest
    table = store.read_table("snap", DAY)
    assert {f.name: f.type for f in table.schema} == EXPECTED_SCHEMA
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 2]  # half-open window, key order
    assert rows[0]["amount"] == Decimal("12345678901234567890.123456789")
    assert rows[0]["big"] == Decimal("1.5") and rows[1]["big"] is None
    assert rows[0]["at"] == dt.datetime(2024, 3, 10, tzinfo=UTC)
    assert rows[1]["at"] == dt.datetime(2024, 3, 10, 23, 59, 59, 999999, tzinfo=UTC)
    assert rows[0]["wall"] == dt.datetime(2024, 3, 10, 13, 14, 15, 123456)
    assert (rows[0]["name"], rows[0]["ok"], rows[0]["score"], rows[0]["raw"]) == ("ünï", True, 0.1, b"\x00\x01")
    state = m.source_state
    assert state["engine"] == "bigquery" and state["job_id"].startswith("snapshot_platform_")
    assert state["pinned"] is True
    assert abs((dt.datetime.fromisoformat(state["snapshot_time"]) - before).total_seconds()) < 60
    assert state["read_api"] == ("storage" if storage_api else "rest")
    assert m.params["partition_start"] == "2024-03-10T00:00:00+00:00"
    assert m.source == {"name": "bq", "kind": "bigquery", "host": "127.0.0.1", "database": bigquery_emulator.project,
                           "project": bigquery_emulator.project, "location": None, "auth": "anonymous"}


def test_date_window_parameters(bigquery_emulator: Any, events_table: str, tmp_path: Path) -> None:
    query = f"SELECT id, day FROM `{events_table}` WHERE day >= :partition_start AND day < :partition_end"
    store = SnapshotStore(tmp_path / "storage")
    m = take_snapshot(make_catalog(source_settings(bigquery_emulator, window_param_type="DATE"), query),
                      "snap", DAY, store).result.manifest
    assert store.read_table("snap", DAY).column("id").to_pylist() == [1, 2]
    assert m.source_state["pinned"] is False  # the query did not opt in to FOR SYSTEM_TIME AS OF


def test_a_writing_query_fails_cleanly_and_changes_nothing(bigquery_emulator: Any, events_table: str,
                                                           tmp_path: Path) -> None:
    query = (f"DELETE FROM `{events_table}` WHERE at >= :partition_start AND at < :partition_end")
    store = SnapshotStore(tmp_path / "storage")
    with pytest.raises(SourceError) as info:
        take_snapshot(make_catalog(source_settings(bigquery_emulator), query), "snap", DAY, store,
                      sleep=lambda s: pytest.fail("not transient"))
    assert "source bq" in str(info.value)
    client = bigquery_emulator.client()
    assert list(client.query(f"SELECT count(*) FROM `{events_table}`").result())[0][0] == 4
    assert store.assets() == []


def test_catalog_rules_for_bigquery() -> None:
    q = "SELECT 1 AS id FROM t WHERE a >= :partition_start AND a < :partition_end"
    with pytest.raises(CatalogError, match="anonymous is only for an emulator"):
        make_catalog({"kind": "bigquery", "project": "p", "anonymous": True}, q)
    with pytest.raises(CatalogError, match="credentials_file or credentials_json, not both"):
        make_catalog({"kind": "bigquery", "project": "p", "credentials_file": "/k.json",
                      "credentials_json": {"env": "K"}}, q)
    with pytest.raises(CatalogError, match="maximum_bytes_billed"):
        make_catalog({"kind": "bigquery", "project": "p", "maximum_bytes_billed": 0}, q)
    # no credentials at all: Application Default Credentials
    spec = make_catalog({"kind": "bigquery", "project": "p"}, q).sources["bq"]
    from snapshot_platform.sources import make_source

    assert make_source("bq", spec).describe()["auth"] == "application_default"


@pytest.mark.slow
def test_dagster_asset_materialize_cli(bigquery_emulator: Any, events_table: str, platform_env: Any,
                                       write_catalog: Any) -> None:
    catalog = write_catalog({
        "sources": {"lake": source_settings(bigquery_emulator)},
        "snapshots": {"events": {
            "source": "lake", "key": ["id"], "partitions": {"cadence": "daily", "start": "2024-01-01"},
            "query": f"SELECT id, at, amount FROM `{events_table}` FOR SYSTEM_TIME AS OF :snapshot_time"
                     f" WHERE at >= :partition_start AND at < :partition_end",
        }},
    })
    proc = dagster_materialize(catalog, platform_env, ["events"], DAY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = published_manifests(platform_env.storage, "events", DAY)
    assert m.source["kind"] == "bigquery"
    assert m.source_state["pinned"] is True and m.source_state["snapshot_time"]
    assert m.source_state["read_api"] == "storage"
    assert m.row_count == 2
