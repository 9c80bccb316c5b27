"""A big catalog's snapshots packed into shared ops (orchestration/snapshot_assets.py
``build_snapshot_assets``): each snapshot is still its own asset with its own checks, versions and
materializations; a run selecting some of a pack runs only those, one after another in one step.

The bounds are lowered here (packs of 2 above 1 snapshot) so that three snapshots make two packs.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from snapshot_platform.catalog import parse_catalog
from snapshot_platform.orchestration import snapshot_assets
from snapshot_platform.orchestration.definitions import build_assets, build_definitions, build_resources
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.conftest import reader_url

DAYS = ["2024-06-01", "2024-06-02", "2024-06-03"]
NAMES = ["alpha", "beta", "gamma"]


def key(name: str) -> AssetKey:
    return AssetKey(["snapshots", name])


@pytest.fixture
def packed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_assets, "PACK_ABOVE", 1)
    monkeypatch.setattr(snapshot_assets, "PACK_SIZE", 2)


@pytest.fixture
def doc(pg_database: str) -> dict[str, Any]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, day date NOT NULL)")
        conn.execute("INSERT INTO t SELECT g, %s::date + g %% 3 FROM generate_series(1, 30) g", (DAYS[0],))
    query = "SELECT id, day{extra} FROM t WHERE day >= :partition_start AND day < :partition_end"
    return {
        "sources": {"pg": {"kind": "postgres", "url": reader_url(pg_database), "statement_timeout_s": 30}},
        "snapshots": {name: {"source": "pg", "query": query.format(extra=""), "key": ["id"],
                             "partitions": {"cadence": "daily", "start": DAYS[0]}} for name in NAMES},
    }


def run(doc: dict[str, Any], storage: Any, names: list[str], **kwargs: Any) -> Any:
    return materialize(build_assets(parse_catalog(doc)), selection=[key(n) for n in names],
                       instance=DagsterInstance.get(), resources=build_resources(str(storage)),
                       raise_on_error=False, **kwargs)


def test_a_big_catalog_packs_its_snapshots_into_shared_ops(packed: None, doc: dict[str, Any]) -> None:
    defs = build_definitions(parse_catalog(doc))
    ops = {a.node_def.name: sorted(k.path[-1] for k in a.keys)
           for a in defs.resolve_asset_graph().assets_defs}
    assert ops == {"snapshots_pg_daily_0": ["alpha", "beta"], "snapshots_pg_daily_1": ["gamma"]}
    pack = defs.resolve_assets_def(key("alpha"))
    assert pack.can_subset and pack.backfill_policy.max_partitions_per_run == 30
    assert {c.name for c in pack.check_keys if c.asset_key == key("beta")} >= {"key_unique", "min_rows"}


def test_a_run_of_one_snapshot_in_a_pack_runs_only_it(
    packed: None, doc: dict[str, Any], platform_env: Any
) -> None:
    result = run(doc, platform_env.storage, ["beta"], partition_key=DAYS[1],
                 run_config={"ops": {"snapshots_pg_daily_0": {"config": {"accept_late": False}}}})
    assert result.success
    mats = result.get_asset_materialization_events()
    assert [(e.asset_key, e.partition) for e in mats] == [(key("beta"), DAYS[1])]
    store = SnapshotStore(platform_env.storage)
    assert mats[0].step_materialization_data.materialization.metadata["snapshot/version"].value == \
        store.latest("beta", DAYS[1]).version
    assert store.partitions("alpha") == []
    evals = [e.event_specific_data for e in result.all_events
             if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evals and {(e.asset_key, e.partition) for e in evals} == {(key("beta"), DAYS[1])}


def test_one_failing_snapshot_does_not_stop_the_others_of_its_step(
    packed: None, doc: dict[str, Any], platform_env: Any
) -> None:
    query = doc["snapshots"]["alpha"]["query"]
    doc["snapshots"]["alpha"]["query"] = query.replace("FROM t ", "FROM missing ")
    result = run(doc, platform_env.storage, ["alpha", "beta"], partition_key=DAYS[0])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "snapshots_pg_daily_0"
    assert "missing" in failure.event_specific_data.error.to_string()
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [key("beta")]
    assert SnapshotStore(platform_env.storage).partitions("beta") == [DAYS[0]]


def test_a_ranged_run_of_a_pack_reports_each_snapshot_and_partition(
    packed: None, doc: dict[str, Any], platform_env: Any
) -> None:
    result = run(doc, platform_env.storage, ["alpha", "beta"],
                 tags={ASSET_PARTITION_RANGE_START_TAG: DAYS[0], ASSET_PARTITION_RANGE_END_TAG: DAYS[2]})
    assert result.success
    mats = {(e.asset_key.path[-1], e.partition) for e in result.get_asset_materialization_events()}
    assert mats == {(n, d) for n in ("alpha", "beta") for d in DAYS}
    store = SnapshotStore(platform_env.storage)
    instance = DagsterInstance.get()
    for n in ("alpha", "beta"):
        assert store.partitions(n) == DAYS
        records = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(key(n), "key_unique"), limit=10)
        assert sorted(r.partition for r in records) == DAYS
