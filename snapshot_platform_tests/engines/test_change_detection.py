"""Change detection on PostgreSQL and MariaDB: a ``change_probe`` fingerprint recorded with each version
(read in the same session), ``snapshot-platform changed`` and the change sensor finding exactly the
partitions whose rows changed (late insert, update, delete) and nothing else, and a fingerprint that
moved without the data changing recorded beside the write-once manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import psycopg
import pymysql
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, DefaultSensorStatus, RunRequest, build_sensor_context

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform.cli import main
from snapshot_platform.orchestration.change_sensors import build_change_sensors
from snapshot_platform.orchestration.resources import SnapshotStoreResource
from snapshot_platform.store import IntegrityError, SnapshotStore
from snapshot_platform.store.fingerprints import FINGERPRINTS_DIR
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform_tests.conftest import reader_url

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
QUERY = "SELECT id, amount FROM orders WHERE day >= :partition_start AND day < :partition_end"
PROBE = ("SELECT count(*) AS n, max(updated_at) AS last_update FROM orders"
         " WHERE day >= :partition_start AND day < :partition_end")


@pytest.fixture(params=["postgres", "mariadb"])
def db(request: pytest.FixtureRequest) -> tuple[dict[str, Any], Callable[..., None]]:
    """(the catalog's source entry, run(statement...) as the admin) of a database with ``orders``."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")

        def run(*statements: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                for s in statements:
                    conn.execute(s)

        run("CREATE TABLE orders (id int PRIMARY KEY, day timestamp, amount int, updated_at timestamp)")
        source = {"kind": "postgres", "url": reader_url(url)}
    else:
        url = request.getfixturevalue("mysql_database")

        def run(*statements: str) -> None:
            with pymysql.connect(host="127.0.0.1", port=3306, user="root", database=url.rsplit("/", 1)[1],
                                 autocommit=True) as conn:
                for s in statements:
                    conn.cursor().execute(s)

        run("CREATE TABLE orders (id INT PRIMARY KEY, day DATETIME, amount INT, updated_at DATETIME(6))")
        source = {"kind": "mysql", "url": reader_url(url)}
    rows = [f"({d * 10 + i}, '{day} 0{i}:00:00', {100 + i}, '2024-03-05 00:00:00')"
            for d, day in enumerate(DAYS, start=1) for i in range(3)]
    run("INSERT INTO orders VALUES " + ", ".join(rows))
    return source, run


def _catalog(source: dict[str, Any]) -> dict[str, Any]:
    return {"sources": {"db": source},
            "snapshots": {"orders": {"source": "db", "query": QUERY, "key": ["id"],
                                     "change_probe": {"query": PROBE, "lookback": 10},
                                     "partitions": {"cadence": "daily", "start": "2024-01-01"}}}}


def _changed(storage: Path, catalog_path: Path) -> list[dict[str, Any]]:
    res = CliRunner().invoke(main, ["--storage", str(storage), "--catalog", str(catalog_path), "changed", "orders", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _sensor_partitions(catalog: Catalog, storage: Path, instance: DagsterInstance) -> list[str]:
    (sensor,) = build_change_sensors(catalog)
    assert sensor.name == "snapshot_orders_change_sensor" and sensor.default_status == DefaultSensorStatus.STOPPED
    ctx = build_sensor_context(instance=instance, resources={"snapshot_store": SnapshotStoreResource(storage_url=str(storage))})
    result = sensor(ctx)
    requests = result if isinstance(result, list) else []
    assert all(isinstance(r, RunRequest) and r.asset_selection[0].path == ["snapshots", "orders"] for r in requests)
    return sorted(r.partition_key for r in requests)


def test_changed_and_the_sensor_find_exactly_the_changed_partitions(
    db: tuple[dict[str, Any], Callable[..., None]], tmp_path: Path, platform_env: Any,
    write_catalog: Callable[..., Path],
) -> None:
    source, run = db
    doc = _catalog(source)
    catalog, path = parse_catalog(doc), write_catalog(doc)
    storage = platform_env.storage
    store = SnapshotStore(str(storage))
    first = {d: take_snapshot(catalog, "orders", d, store).result.manifest for d in DAYS}
    assert first[DAYS[0]].source_fingerprint["n"] == 3
    assert first[DAYS[0]].source_fingerprint["last_update"].startswith("2024-03-05")
    assert _changed(storage, path) == []

    run(f"INSERT INTO orders VALUES (19, '{DAYS[0]} 09:00:00', 5, '2024-03-06 00:00:00')",  # late insert
        "UPDATE orders SET amount = 7, updated_at = '2024-03-06 00:00:00' WHERE id = 21",  # update
        "DELETE FROM orders WHERE id = 32")  # delete (its partition's max(updated_at) stays: count moves)
    found = _changed(storage, path)
    assert [c["partition"] for c in found] == DAYS[:3]
    assert [c["version"] for c in found] == [first[d].version for d in DAYS[:3]]
    assert found[0]["recorded"]["n"] == 3 and found[0]["current"]["n"] == 4
    assert found[2]["current"]["n"] == 2
    with DagsterInstance.get() as instance:
        assert _sensor_partitions(catalog, storage, instance) == DAYS[:3]

        for d in DAYS[:3]:  # the re-snapshots the sensor asked for
            assert take_snapshot(catalog, "orders", d, store).result.created
        assert _changed(storage, path) == []
        assert _sensor_partitions(catalog, storage, instance) == []

        # updated and updated back: the same rows (the same version), a moved fingerprint
        run("UPDATE orders SET amount = 999, updated_at = '2024-03-07 00:00:00' WHERE id = 41",
            "UPDATE orders SET amount = 101, updated_at = '2024-03-07 00:00:01' WHERE id = 41")  # as it was
        assert [c["partition"] for c in _changed(storage, path)] == [DAYS[3]]
        assert _sensor_partitions(catalog, storage, instance) == [DAYS[3]]
        manifest_file = store.version_dir("orders", DAYS[3], first[DAYS[3]].version) / "manifest.json"
        before = manifest_file.read_bytes()
        again = take_snapshot(catalog, "orders", DAYS[3], store).result
        assert not again.created and again.version == first[DAYS[3]].version
        assert manifest_file.read_bytes() == before  # the write-once manifest is untouched
        assert _changed(storage, path) == []
        assert _sensor_partitions(catalog, storage, instance) == []
    assert store.verify_version(again.manifest) == []  # the sidecar is a deliberate, verified file
    sidecars = list((store.version_dir("orders", DAYS[3], again.version) / FINGERPRINTS_DIR).iterdir())
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_bytes())["source_fingerprint"]["last_update"].startswith(
        "2024-03-07")
    (sidecars[0].parent / "notes.txt").write_text("x")  # anything else there is not
    with pytest.raises(IntegrityError, match="not a source fingerprint sidecar"):
        store.read_table("orders", DAYS[3], again.version)
