"""The Redshift source's code path, run against PostgreSQL (Redshift speaks its protocol), with moto's
server issuing IAM credentials (``GetClusterCredentials``).

What this exercises: the psycopg server-side cursor in bounded batches, type decoding from the
result's OIDs, the SERIALIZABLE READ ONLY transaction, the statement timeout (test_safety.py), stored
and IAM credentials (the IAM call, its caching and refresh before expiry and after a failed login),
``dagster asset materialize``. What it cannot: Redshift's own SQL dialect and system functions, its
leader-node cursor limits, TLS to a real cluster, and a real check of the IAM password (this
PostgreSQL trusts local connections, so the role moto names is what is checked, not its password).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pytest

from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import Window, make_source
from snapshot_platform.sources import redshift as rs
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import dagster_materialize, published_manifests
from snapshot_platform_tests.redshift_catalog import DAY, make_catalog, sql

UTC = dt.timezone.utc
WINDOW = Window(dt.datetime(2024, 3, 10, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


def test_types_from_the_result_oids(pg_database: str, store: SnapshotStore) -> None:
    sql(pg_database,
        "CREATE TABLE typed (id int PRIMARY KEY, day date, amount numeric(15,2), wide numeric(40,5), free numeric,"
        " at timestamptz, wall timestamp, t time, flag boolean, label varchar(20), big bigint, small smallint,"
        " f4 real, f8 float8, doc jsonb, span interval, tags int[], uid uuid, raw bytea)",
        "INSERT INTO typed VALUES (1, '2024-03-10', 1234567890123.45, 12345678901234567890123456789012345.12345,"
        " 3.14159265358979323846264338327950288, '2024-03-10 09:30:00+05:30', '2024-03-10 13:14:15.123456',"
        " '23:59:59.999999', true, 'ünï %s', 9223372036854775807, -32768, 1.5, 0.1, '{\"a\": [1, 2]}',"
        " '1 day 02:00:00', '{1,2,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0001'),"
        " (2, '2024-03-10', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL), (3, '2024-03-11', 1, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL)")
    catalog = make_catalog({"url": pg_database},
                           "SELECT * FROM typed WHERE day >= :partition_start AND day < :partition_end")
    take_snapshot(catalog, "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert {f.name: f.type for f in table.schema} == {
        "id": pa.int32(), "day": pa.date32(), "amount": pa.decimal128(15, 2), "wide": pa.decimal256(40, 5),
        "free": pa.string(), "at": pa.timestamp("us", tz="UTC"), "wall": pa.timestamp("us"), "t": pa.time64("us"),
        "flag": pa.bool_(), "label": pa.string(), "big": pa.int64(), "small": pa.int16(), "f4": pa.float32(),
        "f8": pa.float64(), "doc": pa.string(), "span": pa.string(), "tags": pa.string(), "uid": pa.string(),
        "raw": pa.binary(),
    }
    r1, r2 = table.to_pylist()
    assert r1["amount"] == Decimal("1234567890123.45")
    assert r1["wide"] == Decimal("12345678901234567890123456789012345.12345")
    assert Decimal(r1["free"]) == Decimal("3.14159265358979323846264338327950288")
    assert r1["at"] == dt.datetime(2024, 3, 10, 4, 0, tzinfo=UTC)
    assert r1["wall"] == dt.datetime(2024, 3, 10, 13, 14, 15, 123456)
    assert r1["t"] == dt.time(23, 59, 59, 999999)
    assert r1["label"] == "ünï %s"
    # everything without a native Arrow type is the server's own text, not a Python repr
    assert (r1["doc"], r1["span"], r1["tags"]) == ('{"a": [1, 2]}', "1 day 02:00:00", "{1,2,3}")
    assert r1["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" and r1["raw"] == b"\x00\x01"
    assert all(v is None for k, v in r2.items() if k not in ("id", "day"))


def test_streams_bounded_batches_from_one_snapshot(pg_database: str) -> None:
    sql(pg_database, "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t SELECT g, '2024-03-10' FROM generate_series(1, 1000) g")
    catalog = make_catalog({"url": pg_database, "fetch_batch_rows": 100},
                           "SELECT id, day FROM t WHERE day >= :partition_start AND day < :partition_end")
    source = make_source("rs", catalog.sources["rs"])
    with source.read(catalog.snapshots["snap"].query, WINDOW, ["id"]) as read:
        batches = iter(read.batches)
        first = next(batches)
        sql(pg_database, "INSERT INTO t VALUES (5000, '2024-03-10')", "DELETE FROM t WHERE id = 999")
        rest = list(batches)
        assert read.state["engine"] == "redshift" and read.state["backend_pid"] > 0
    sizes = [first.num_rows] + [b.num_rows for b in rest]
    assert max(sizes) == 100 and len(sizes) == 10  # a cursor fetched 100 rows at a time
    ids = [i for b in [first, *rest] for i in b.column("id").to_pylist()]
    assert ids == list(range(1, 1001))  # the rows committed meanwhile are not in this read


# ---------------------------------------------------------------- IAM through moto


@pytest.fixture
def iam_cluster(aws_env: Any, pg_database: str) -> Iterator[dict[str, Any]]:
    """A moto cluster, and a PostgreSQL role named as GetClusterCredentials names its user."""
    cluster = f"snap-{uuid.uuid4().hex[:8]}"
    aws_env.client("redshift").create_cluster(
        ClusterIdentifier=cluster, NodeType="ra3.xlplus", MasterUsername="admin",
        MasterUserPassword="Adm1nPassw0rd", DBName="dev")
    db_user = f"reader_{uuid.uuid4().hex[:6]}"
    role = f"IAMA:{db_user}"  # moto, like Redshift, prefixes the user (IAMA: with AutoCreate)
    db = pg_database.rsplit("/", 1)[1]
    sql(pg_database, "CREATE TABLE t (id int PRIMARY KEY, day date)",
        "INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10'), (3, '2024-03-11')",
        f'CREATE ROLE "{role}" LOGIN', f'GRANT SELECT ON t TO "{role}"')
    rs.forget_iam_credentials()
    yield {"cluster": cluster, "db_user": db_user, "role": role, "database": db, "endpoint": aws_env.endpoint}
    rs.forget_iam_credentials()
    sql(pg_database, f'DROP OWNED BY "{role}"')
    sql(pg_database.rsplit("/", 1)[0] + "/postgres", f"DROP ROLE IF EXISTS \"{role}\"")


def iam_source(c: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1", "port": 5432, "database": c["database"],
        "iam": {"cluster_identifier": c["cluster"], "db_user": c["db_user"], "auto_create": True,
                "db_groups": ["readers"], "region": "us-east-1", "endpoint_url": c["endpoint"], **extra},
    }


def test_iam_credentials_connect_and_are_cached_then_refreshed(iam_cluster: dict[str, Any], store: SnapshotStore) -> None:
    catalog = make_catalog(iam_source(iam_cluster),
                           "SELECT id FROM t WHERE day >= :partition_start AND day < :partition_end")
    outcome = take_snapshot(catalog, "snap", DAY, store)
    m = outcome.result.manifest
    assert m.row_count == 2
    assert m.source_state["user"] == iam_cluster["role"]  # connected as the user moto issued
    assert m.source["auth"] == "iam" and m.source["cluster_identifier"] == iam_cluster["cluster"]

    spec = catalog.sources["rs"]
    first = rs.iam_credentials(spec)
    assert rs.iam_credentials(spec) is first  # cached in memory while valid
    later = first["expiration"] - dt.timedelta(seconds=30)  # within a minute of expiring: asked again
    renewed = rs.iam_credentials(spec, now=later)
    assert renewed is not first and renewed["password"] != first["password"]
    assert rs.iam_credentials(spec, refresh=True)["password"] != renewed["password"]  # after a failed login
    # the temporary password is in no manifest
    assert first["password"] not in str(m)


def test_iam_errors_are_clear(iam_cluster: dict[str, Any], store: SnapshotStore) -> None:
    source = iam_source(iam_cluster)
    source["iam"]["cluster_identifier"] = "no-such-cluster"
    catalog = make_catalog(source, "SELECT id FROM t WHERE day >= :partition_start AND day < :partition_end")
    from snapshot_platform.sources import SourceError

    with pytest.raises(SourceError, match="GetClusterCredentials for cluster no-such-cluster.*ClusterNotFound"):
        take_snapshot(catalog, "snap", DAY, store, sleep=lambda s: pytest.fail("not transient"))


def test_catalog_wants_one_way_to_authenticate() -> None:
    from snapshot_platform.catalog import CatalogError

    q = "SELECT 1 AS id WHERE :partition_start IS NOT NULL AND :partition_end IS NOT NULL"
    with pytest.raises(CatalogError, match="either url"):
        make_catalog({"url": {"env": "X"}, "host": "h", "database": "d",
                      "iam": {"cluster_identifier": "c", "db_user": "u"}}, q)
    with pytest.raises(CatalogError, match="iam needs host and database"):
        make_catalog({"iam": {"cluster_identifier": "c", "db_user": "u"}}, q)
    with pytest.raises(CatalogError, match="unknown field"):
        make_catalog({"url": {"env": "X"}, "cluster_id": "c"}, q)


@pytest.mark.slow
def test_dagster_asset_materialize_cli_with_iam(iam_cluster: dict[str, Any], aws_env: Any, platform_env: Any,
                                                write_catalog: Any) -> None:
    catalog = write_catalog({
        "sources": {"warehouse": {"kind": "redshift", "sslmode": "disable", **iam_source(iam_cluster)}},
        "snapshots": {"events": {"source": "warehouse", "key": ["id"],
                                 "query": "SELECT id, day FROM t WHERE day >= :partition_start AND day < :partition_end",
                                 "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })
    proc = dagster_materialize(catalog, platform_env, ["events"], DAY, **aws_env.environ())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (m,) = published_manifests(platform_env.storage, "events", DAY)
    assert m.source["kind"] == "redshift" and m.source["auth"] == "iam"
    assert m.source_state["engine"] == "redshift" and m.source_state["user"] == iam_cluster["role"]
    assert m.row_count == 2
