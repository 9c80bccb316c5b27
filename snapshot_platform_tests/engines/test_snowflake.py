"""The Snowflake source against fakesnow's server (snowflake-connector-python 4.8 over HTTP).

Exercised: login through the real connector (password and key-pair paths), session parameters,
server-side (qmark) binding of the window, ``fetch_arrow_batches``, the schema from the result
metadata, the query id as ``source_state``, ``dagster asset materialize`` (the server is reachable
from the CLI's process). Not exercised, because fakesnow does not implement them: time travel
(``AT(TIMESTAMP => :snapshot_time)`` is bound but not honoured), ``STATEMENT_TIMEOUT_IN_SECONDS``,
roles and grants, and checking a password or a key (fakesnow accepts any login).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import snowflake.connector

from snapshot_platform.catalog import CatalogError, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import dagster_materialize, published_manifests

UTC = dt.timezone.utc
DAY = "2024-03-10"
QUERY = "SELECT id, amount, ts, ntz, name, d, f, b FROM events WHERE ts >= :partition_start AND ts < :partition_end"


@pytest.fixture
def snow_db(fakesnow_server: dict[str, Any]) -> dict[str, Any]:
    """A fresh database.schema with an events table, on the fakesnow server."""
    db = f"SP_{uuid.uuid4().hex[:8].upper()}"
    conn = snowflake.connector.connect(**fakesnow_server)
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE {db}")
    cur.execute(f"CREATE SCHEMA {db}.S1")
    cur.execute(f"CREATE TABLE {db}.S1.events (id NUMBER(10,0), amount NUMBER(15,2), ts TIMESTAMP_TZ, ntz TIMESTAMP_NTZ,"
                " name VARCHAR, d DATE, f FLOAT, b BOOLEAN)")
    cur.execute(f"INSERT INTO {db}.S1.events VALUES"
                " (2, 0.01, '2024-03-10 23:59:59.999999+00:00', NULL, '', '2024-03-10', NULL, NULL),"
                " (1, 1234567890123.45, '2024-03-10 00:00:00+00:00', '2024-03-10 13:14:15.123456', 'ünï',"
                "  '2024-03-10', 1.5, TRUE),"
                " (3, 1, '2024-03-09 23:59:59.999999+00:00', NULL, 'before', '2024-03-09', NULL, NULL),"
                " (4, 1, '2024-03-11 00:00:00+00:00', NULL, 'after', '2024-03-11', NULL, NULL)")
    conn.close()
    return {"database": db, "schema": "S1"}


def source_settings(server: dict[str, Any], db: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "snowflake", "account": server["account"], "user": server["user"],
            "password": {"env": "SP_TEST_SNOWFLAKE_PASSWORD"}, "host": server["host"], "port": server["port"],
            "protocol": server["protocol"], "database": db["database"], "schema": db["schema"],
            "warehouse": "SNAP_WH", "statement_timeout_s": 20, **extra}


def make_catalog(settings: dict[str, Any], query: str = QUERY, key: list[str] | None = None) -> Any:
    return parse_catalog({
        "sources": {"snow": settings},
        "snapshots": {"snap": {"source": "snow", "query": query, "key": key or ["ID"],
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


def test_window_types_and_query_id(fakesnow_server: dict[str, Any], snow_db: dict[str, Any], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"S3cr3t-{uuid.uuid4()}"  # fakesnow accepts any password
    monkeypatch.setenv("SP_TEST_SNOWFLAKE_PASSWORD", secret)
    store = SnapshotStore(tmp_path / "storage")
    outcome = take_snapshot(make_catalog(source_settings(fakesnow_server, snow_db)), "snap", DAY, store)
    m = outcome.result.manifest
    table = store.read_table("snap", DAY)
    assert {f.name: f.type for f in table.schema} == {
        "ID": pa.int64(), "AMOUNT": pa.decimal128(15, 2), "TS": pa.timestamp("ns", tz="UTC"),
        "NTZ": pa.timestamp("ns"), "NAME": pa.string(), "D": pa.date32(), "F": pa.float64(), "B": pa.bool_(),
    }
    rows = table.to_pylist()
    assert [r["ID"] for r in rows] == [1, 2]  # half-open window, ordered by the key
    assert rows[0]["AMOUNT"] == Decimal("1234567890123.45") and rows[1]["AMOUNT"] == Decimal("0.01")
    assert rows[0]["NAME"] == "ünï"
    assert rows[0]["D"] == dt.date(2024, 3, 10)
    state = m.source_state
    assert state["engine"] == "snowflake" and len(state["query_id"]) >= 16
    assert state["pinned"] is False and state["snapshot_time"]
    assert m.source["kind"] == "snowflake" and m.source["auth"] == "password"
    assert secret not in str(m)


def test_key_pair_authentication_path(fakesnow_server: dict[str, Any], snow_db: dict[str, Any], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The PEM is read (with its passphrase) and handed to the connector as SNOWFLAKE_JWT; fakesnow does
    not verify the key, so this checks our side of key-pair login, not Snowflake's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame")).decode()
    monkeypatch.setenv("SP_TEST_SNOWFLAKE_KEY", pem)
    monkeypatch.setenv("SP_TEST_SNOWFLAKE_PASSPHRASE", "open sesame")
    settings = source_settings(fakesnow_server, snow_db)
    del settings["password"]
    settings.update(private_key={"env": "SP_TEST_SNOWFLAKE_KEY"},
                    private_key_passphrase={"env": "SP_TEST_SNOWFLAKE_PASSPHRASE"})
    store = SnapshotStore(tmp_path / "storage")
    m = take_snapshot(make_catalog(settings), "snap", DAY, store).result.manifest
    assert m.source["auth"] == "key_pair" and m.row_count == 2

    monkeypatch.setenv("SP_TEST_SNOWFLAKE_PASSPHRASE", "wrong")
    with pytest.raises(SourceError, match="private key cannot be read"):
        take_snapshot(make_catalog(settings), "snap", DAY, store)


def test_snapshot_time_is_bound_where_the_query_pins(fakesnow_server: dict[str, Any], snow_db: dict[str, Any],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fakesnow has no time travel, so the pin is bound into a plain comparison here: the value bound
    is the server's CURRENT_TIMESTAMP() taken at the read's start, and it is what source_state records."""
    monkeypatch.setenv("SP_TEST_SNOWFLAKE_PASSWORD", fakesnow_server["password"])
    query = ("SELECT id, :snapshot_time AS pinned_at FROM events"
             " WHERE ts >= :partition_start AND ts < :partition_end")
    store = SnapshotStore(tmp_path / "storage")
    before = dt.datetime.now(UTC)
    m = take_snapshot(make_catalog(source_settings(fakesnow_server, snow_db), query), "snap", DAY, store).result.manifest
    pinned = store.read_table("snap", DAY).column("PINNED_AT").to_pylist()
    assert m.source_state["pinned"] is True
    recorded = dt.datetime.fromisoformat(m.source_state["snapshot_time"])
    assert abs((recorded - before).total_seconds()) < 60
    # bound as TIMESTAMP_NTZ holding UTC
    assert {p.replace(tzinfo=UTC, microsecond=0) for p in pinned} == {recorded.replace(microsecond=0)}


def test_catalog_rules_for_snowflake() -> None:
    base = {"kind": "snowflake", "account": "acme", "user": "reader", "password": {"env": "P"}}
    with pytest.raises(CatalogError, match="exactly one of password, private_key, private_key_file"):
        make_catalog({**base, "private_key": {"env": "K"}})
    with pytest.raises(CatalogError, match="only for an emulator"):
        make_catalog({**base, "host": "acme.example.com", "protocol": "http"})
    with pytest.raises(CatalogError, match="password"):
        make_catalog({**base, "password": "literal-password"})
    # :snapshot_time only where the engine can pin
    with pytest.raises(CatalogError, match="snapshot_time"):
        parse_catalog({"sources": {"pg": {"kind": "postgres", "url": {"env": "U"}}},
                       "snapshots": {"s": {"source": "pg", "key": ["id"], "partitions": {"cadence": "daily",
                                           "start": "2024-01-01"},
                                           "query": "SELECT 1 AS id FROM t AT(TIMESTAMP => :snapshot_time) "
                                                    "WHERE a >= :partition_start AND a < :partition_end"}}})


@pytest.mark.slow
def test_dagster_asset_materialize_cli(fakesnow_server: dict[str, Any], snow_db: dict[str, Any],
                                       platform_env: Any, write_catalog: Any) -> None:
    catalog = write_catalog({
        "sources": {"snow": source_settings(fakesnow_server, snow_db)},
        "snapshots": {"events": {"source": "snow", "query": QUERY, "key": ["ID"],
                                 "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })
    proc = dagster_materialize(catalog, platform_env, ["events"], DAY,
                               SP_TEST_SNOWFLAKE_PASSWORD=fakesnow_server["password"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = published_manifests(platform_env.storage, "events", DAY)
    assert m.source["kind"] == "snowflake" and m.source["database"] == snow_db["database"]
    assert m.source_state["engine"] == "snowflake" and m.source_state["query_id"]
    assert m.row_count == 2
