"""``mode: as_of`` snapshots on PostgreSQL and MariaDB: the state of a query as of the partition's end,
read in one consistent session; ``as_of``, ``read_at`` (the database's clock) and ``late`` in the
manifest; a late read refused, then accepted explicitly (``--accept-late``); a model trained on one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable

import psycopg
import pymysql
import pytest
from click.testing import CliRunner

from snapshot_platform.capture import LateReadError
from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform.cli import main
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training.train import train
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform_tests.conftest import reader_url

UTC = dt.timezone.utc
PARTITION = "2024-02-01"  # daily: its end is 2024-02-02T00:00Z
QUERY = "SELECT id, plan, tenure, churned FROM customers WHERE signup_date < :partition_end"
ROWS = [  # id, signup_date, plan, tenure, churned
    (1, "2024-01-05 10:00:00", "basic", 3.0, 0),
    (2, "2024-01-20 11:00:00", "pro", 12.0, 1),
    (3, "2024-02-01 23:59:59", "basic", 1.0, 0),  # the last second before the end: in
    (4, "2024-02-02 00:00:00", "pro", 7.0, 1),  # at the end: out
    (5, "2024-03-01 09:00:00", "basic", 2.0, 1),  # later: out
] + [(i, "2023-12-01 00:00:00", "pro" if i % 2 else "basic", float(i), i % 2) for i in range(6, 40)]


def _seed_pg(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, signup_date timestamptz, plan text,"
                     " tenure float8, churned int)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s::timestamp AT TIME ZONE 'UTC', %s, %s, %s)", ROWS)


def _seed_mysql(url: str) -> None:
    db = url.rsplit("/", 1)[1]
    with pymysql.connect(host="127.0.0.1", port=3306, user="root", database=db, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE customers (id INT PRIMARY KEY, signup_date DATETIME, plan VARCHAR(10),"
                    " tenure DOUBLE, churned INT)")
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s)", ROWS)


@pytest.fixture(params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(name, the catalog's source entry) of a database seeded with ROWS."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")
        _seed_pg(url)
        return "postgres", {"kind": "postgres", "url": reader_url(url)}
    url = request.getfixturevalue("mysql_database")
    _seed_mysql(url)
    return "mariadb", {"kind": "mysql", "url": reader_url(url)}


def _catalog(source: dict[str, Any], **snapshot: Any) -> dict[str, Any]:
    return {
        "sources": {"db": source},
        "snapshots": {"customers": {
            "source": "db", "mode": "as_of", "query": QUERY, "key": ["id"],
            "partitions": {"cadence": "daily", "start": "2024-01-01"}, **snapshot}},
        "models": {"churn": {
            "snapshot": "customers", "features": ["tenure"], "target": "churned",
            "estimator": {"class": "sklearn.linear_model.LogisticRegression"}}},
    }


def test_as_of_holds_the_state_at_the_partition_end_and_a_model_trains_on_it(
    engine: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    _, source = engine
    catalog: Catalog = parse_catalog(_catalog(source, max_lag="100000d"))  # never late here
    store = SnapshotStore(str(tmp_path / "storage"))
    before = dt.datetime.now(UTC) - dt.timedelta(seconds=5)
    outcome = take_snapshot(catalog, "customers", PARTITION, store)
    after = dt.datetime.now(UTC) + dt.timedelta(seconds=5)
    m = outcome.result.manifest
    assert sorted(store.read_table("customers", PARTITION, m.version).column("id").to_pylist()) == [1, 2, 3] + list(range(6, 40))
    assert m.as_of == "2024-02-02T00:00:00+00:00"
    assert m.late is False
    read_at = dt.datetime.fromisoformat(m.read_at)
    assert before <= read_at <= after  # the database's clock, taken at the read
    assert dt.datetime.fromisoformat(m.source_state["transaction_start"]) == read_at
    assert m.as_dict()["late"] is False and "as_of" in m.as_dict()
    result = train("churn", catalog.models["churn"], [m], store)  # `partitions: 1`: one state
    assert result.manifests == [m] and "roc_auc" in result.metrics


def test_a_late_as_of_read_is_refused_then_accepted_explicitly(
    engine: tuple[str, dict[str, Any]], tmp_path: Path, write_catalog: Callable[..., Path]
) -> None:
    _, source = engine
    catalog = parse_catalog(_catalog(source))  # max_lag: one cadence period (1 day); 2024 is long gone
    store = SnapshotStore(str(tmp_path / "storage"))
    with pytest.raises(LateReadError, match=r"refusing a late read.*more than max_lag \(1 day.*--accept-late"):
        take_snapshot(catalog, "customers", PARTITION, store)
    assert store.versions("customers", PARTITION) == []  # nothing published

    path = write_catalog(_catalog(source, max_lag="6h"))
    args = ["--storage", str(tmp_path / "storage"), "--catalog", str(path), "snapshot", "customers", PARTITION]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1, refused.output
    assert "refusing a late read" in refused.output and "max_lag (6:00:00)" in refused.output
    assert store.versions("customers", PARTITION) == []

    accepted = CliRunner().invoke(main, [*args, "--accept-late", "--json"])
    assert accepted.exit_code == 0, accepted.output
    (m,) = store.versions("customers", PARTITION)
    assert m.late is True and m.as_of == "2024-02-02T00:00:00+00:00"
    assert dt.datetime.fromisoformat(m.read_at) - dt.datetime.fromisoformat(m.as_of) > dt.timedelta(hours=6)
    assert m.row_count == 37


def test_the_asset_refuses_a_late_read_unless_its_run_config_accepts_it(pg_database: str, platform_env: Any) -> None:
    from dagster import DagsterInstance, materialize

    from snapshot_platform.orchestration.definitions import build_assets, build_resources

    _seed_pg(pg_database)
    catalog = parse_catalog(_catalog({"kind": "postgres", "url": reader_url(pg_database)}))
    store = SnapshotStore(str(platform_env.storage))
    with DagsterInstance.get() as instance:
        def run(**config: Any) -> Any:
            return materialize(build_assets(catalog), partition_key=PARTITION, instance=instance,
                               resources=build_resources(str(platform_env.storage)), raise_on_error=False,
                               run_config={"ops": {"snapshots__customers": {"config": config}}} if config else None)

        refused = run()
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_step_failure)
        assert "refusing a late read" in str(failure.event_specific_data.error)
        assert store.versions("customers", PARTITION) == []
        accepted = run(accept_late=True)
        assert accepted.success
    (m,) = store.versions("customers", PARTITION)
    assert m.late is True and m.dagster_run_id == accepted.run_id
