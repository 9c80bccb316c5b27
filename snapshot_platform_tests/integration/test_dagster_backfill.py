"""Backfills: a ranged run (Dagster's backfill policy) snapshots many partitions in one step and still
publishes, records and checks each partition on its own, in the real PostgreSQL.

The speed-up against a run per partition is measured by benchmarks/backfill.py, not here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    materialize,
)
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from snapshot_platform.catalog import parse_catalog
from snapshot_platform.gate import UntrainableSnapshot, assert_trainable
from snapshot_platform.orchestration.definitions import build_assets, build_definitions, build_resources
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform.orchestration.snapshot_assets import BACKFILL_PARTITIONS_ENV
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.conftest import reader_url

NAME = "events"
KEY = AssetKey(["snapshots", NAME])
DAYS = [f"2024-05-{d:02d}" for d in range(1, 7)]
CHECKS = {"key_unique", "not_null", "min_rows", "schema_unchanged", "volume"}


def catalog_doc(url: str) -> dict[str, Any]:
    return {
        "sources": {"pg": {"kind": "postgres", "url": reader_url(url), "statement_timeout_s": 30,
                           "max_concurrent_queries": 1}},
        "snapshots": {NAME: {
            "source": "pg",
            "query": "SELECT id, day, amount FROM events "
                     "WHERE day >= :partition_start AND day < :partition_end",
            "partitions": {"cadence": "daily", "start": DAYS[0]},
            "key": ["id"],
            "not_null": ["id", "day"],
        }},
    }


@pytest.fixture
def events_db(pg_database: str) -> str:
    """``events``: 20 rows a day over DAYS; on the fourth day one id appears twice (key_unique fails)."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int, day date NOT NULL, amount numeric(10, 2))")
        conn.execute(
            "INSERT INTO events SELECT g, %s::date + (g - 1) / 20, g * 0.5 FROM generate_series(1, %s) g",
            (dt.date.fromisoformat(DAYS[0]), 20 * len(DAYS)),
        )
        conn.execute("INSERT INTO events SELECT id, day, amount FROM events WHERE id = 65")  # day 4
    return pg_database


def check_evaluations(result: Any) -> list[Any]:
    return [e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def ranged_run(doc: dict[str, Any], storage: Path, instance: DagsterInstance, first: str, last: str) -> Any:
    return materialize(
        build_assets(parse_catalog(doc)), selection=[KEY], instance=instance,
        resources=build_resources(str(storage)), raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )


def test_a_ranged_run_publishes_records_and_checks_each_partition_on_its_own(
    events_db: str, platform_env: Any
) -> None:
    instance = DagsterInstance.get()
    doc = catalog_doc(events_db)
    spec = parse_catalog(doc).snapshots[NAME]
    result = ranged_run(doc, platform_env.storage, instance, DAYS[0], DAYS[-1])
    store = SnapshotStore(platform_env.storage)

    # one version per partition, each with its own manifest, window and checks
    manifests = {day: store.latest(NAME, day) for day in DAYS}
    assert [m.row_count for m in manifests.values()] == [20, 20, 20, 21, 20, 20]
    assert len({m.version for m in manifests.values()}) == len(DAYS)
    for day, m in manifests.items():
        assert (m.partition, m.window["start"][:10], m.dagster_run_id) == (day, day, result.run_id)

    # one materialization per partition, carrying that partition's version (metadata and data version)
    mats = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()]
    assert sorted(m.partition for m in mats) == DAYS
    for mat in mats:
        version = manifests[mat.partition].version
        assert mat.metadata["snapshot/version"].value == version
        assert mat.metadata["dagster/row_count"].value == manifests[mat.partition].row_count
        assert mat.tags["dagster/data_version"] == version
    # the table of every partition rides on the range's last one only
    assert [m.partition for m in mats if "snapshot/partitions" in m.metadata] == [DAYS[-1]]
    for day in DAYS:  # what downstream assets and the UI read back: the latest per partition
        rec = instance.fetch_materializations(AssetRecordsFilter(asset_key=KEY, asset_partitions=[day]),
                                              limit=1).records[0]
        assert rec.asset_materialization.metadata["snapshot/version"].value == manifests[day].version
    pdef = partitions_def(spec.partitions)
    status = get_and_update_asset_status_cache_value(instance, KEY, pdef)
    assert set(status.deserialize_materialized_partition_subsets(pdef).get_partition_keys()) == set(DAYS)
    assert not status.deserialize_failed_partition_subsets(pdef).get_partition_keys()

    # check results recorded per partition (the UI's Checks tab), each pointing at its materialization
    evals = check_evaluations(result)
    assert sorted((e.partition, e.check_name) for e in evals) == sorted((d, c) for d in DAYS for c in CHECKS)
    failed = {(e.partition, e.check_name) for e in evals if not e.passed}
    assert failed == {(DAYS[3], "key_unique")}
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(KEY, "key_unique"), limit=50)
    assert sorted(((r.partition, r.status.value) for r in records), key=str) == [
        (day, "FAILED" if day == DAYS[3] else "SUCCEEDED") for day in DAYS
    ], "one row per partition, none without"
    mat_ids = {r.partition_key: r.storage_id for r in instance.fetch_materializations(KEY, limit=50).records}
    for r in records:
        target = r.event.dagster_event.event_specific_data.target_materialization_data
        assert target is not None and target.storage_id == mat_ids[r.partition]

    # a blocking failure in one partition fails the run (like a one-partition run), after every
    # partition was snapshotted: the failed version stays published as evidence, the gate refuses it
    assert not result.success
    assert assert_trainable(manifests[DAYS[2]]) == []
    with pytest.raises(UntrainableSnapshot):
        assert_trainable(manifests[DAYS[3]])


def test_an_error_mid_range_keeps_the_partitions_before_and_leaves_the_rest_to_retry(
    events_db: str, platform_env: Any
) -> None:
    """The source fails on the third day: the two before are published and recorded; the step fails
    naming the cause; the rest are not materialized, so Dagster shows them failed and a retry of the
    backfill's failed partitions requests exactly those."""
    doc = catalog_doc(events_db)
    doc["snapshots"][NAME]["query"] = (  # division by zero on 2024-05-03 only
        "SELECT id, day, amount / (extract(day FROM day)::int - 3) AS amount FROM events "
        "WHERE day >= :partition_start AND day < :partition_end")
    instance = DagsterInstance.get()
    result = ranged_run(doc, platform_env.storage, instance, DAYS[0], DAYS[4])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "division by zero" in str(failure.event_specific_data.error.to_string())
    store = SnapshotStore(platform_env.storage)
    assert store.partitions(NAME) == DAYS[:2]
    pdef = partitions_def(parse_catalog(doc).snapshots[NAME].partitions)
    status = get_and_update_asset_status_cache_value(instance, KEY, pdef)
    assert sorted(status.deserialize_materialized_partition_subsets(pdef).get_partition_keys()) == DAYS[:2]
    assert sorted(status.deserialize_failed_partition_subsets(pdef).get_partition_keys()) == DAYS[2:5]


def test_a_one_partition_run_reports_through_its_output_as_before(events_db: str, platform_env: Any) -> None:
    instance = DagsterInstance.get()
    result = materialize(build_assets(parse_catalog(catalog_doc(events_db))), partition_key=DAYS[0],
                         instance=instance, resources=build_resources(str(platform_env.storage)))
    assert result.success
    [mat] = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()]
    assert mat.partition == DAYS[0] and "snapshot/partitions" in mat.metadata
    assert [e.event_type_value for e in result.all_events].count("STEP_OUTPUT") >= 1
    evals = check_evaluations(result)
    assert {e.partition for e in evals} == {DAYS[0]} and {e.check_name for e in evals} == CHECKS


def test_the_backfill_policy_follows_the_environment(events_db: str, platform_env: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    doc = catalog_doc(events_db)
    policy = build_definitions(parse_catalog(doc)).resolve_assets_def(KEY).backfill_policy
    assert policy is not None and policy.max_partitions_per_run == 30
    monkeypatch.setenv(BACKFILL_PARTITIONS_ENV, "7")
    policy = build_definitions(parse_catalog(doc)).resolve_assets_def(KEY).backfill_policy
    assert policy is not None and policy.max_partitions_per_run == 7
    monkeypatch.setenv(BACKFILL_PARTITIONS_ENV, "0")
    with pytest.raises(ValueError, match=BACKFILL_PARTITIONS_ENV):
        build_definitions(parse_catalog(doc))


@pytest.mark.slow
def test_a_backfill_through_the_daemon_runs_ranges_of_partitions(
    events_db: str, platform_env: Any, write_catalog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon plans a backfill of 5 partitions under ``max_partitions_per_run=2`` as 3 ranged
    runs (the UI's "Materialize partitions" submits the same asset backfill); every partition gets its
    version, its materialization and its checks, and no run exceeds 2 partitions."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from dagster import RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    doc = catalog_doc(events_db)
    query = doc["snapshots"][NAME]["query"]
    doc["snapshots"][NAME]["query"] = query.replace("FROM events ", "FROM events_clean ")
    with psycopg.connect(events_db, autocommit=True) as conn:  # no failing check: the backfill succeeds
        conn.execute("CREATE TABLE events_clean AS SELECT DISTINCT * FROM events")
    monkeypatch.setenv("SNAPSHOT_PLATFORM_CATALOG", str(write_catalog(doc)))
    monkeypatch.setenv(BACKFILL_PARTITIONS_ENV, "2")
    repo = Path(__file__).resolve().parents[2]
    home = platform_env.dagster_home
    (home / "dagster.yaml").write_text((repo / "deploy" / "dagster.sqlite.yaml").read_text())
    days = DAYS[:5]
    defs = build_definitions()
    with DagsterInstance.from_config(str(home)) as instance:
        backfill_id = make_new_backfill_id()
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id, asset_graph=defs.resolve_asset_graph(), partition_names=days,
            asset_selection=[KEY], backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance,
            all_partitions=False, title=None, description=None, run_config=None))
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m",
                                   "snapshot_platform.definitions"], env=platform_env.environ(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED:
                assert time.monotonic() < deadline, "the daemon did not finish the backfill in 240 s"
                time.sleep(1)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
        ranges = sorted((r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
                        for r in runs)
        assert ranges == [(days[0], days[1]), (days[2], days[3]), (days[4], days[4])]
        records = instance.fetch_materializations(KEY, limit=20).records
        assert sorted(r.partition_key for r in records) == days
        store = SnapshotStore(platform_env.storage)
        for r in records:
            version = r.asset_materialization.metadata["snapshot/version"].value
            assert version == store.latest(NAME, r.partition_key).version
        checks = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(KEY, "key_unique"), limit=20)
        assert sorted((c.partition, c.status.value) for c in checks) == [(d, "SUCCEEDED") for d in days]
