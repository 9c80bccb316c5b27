"""The Dagster layer end to end, on a PostgreSQL-backed catalog.

(a) ``materialize`` of a snapshot asset records the metadata contract, re-materializing unchanged data
    records the same version, changed data a new one beside the old;
(b) a downstream asset loads a window of partitions through ``snapshot_io_manager``, at the versions
    Dagster recorded, falling back to the latest in storage when the instance has no record;
(c) the ``dagster asset materialize`` CLI, in a subprocess;
(d) the definitions load from ``workspace.yaml``, and a snapshot of the demo's keys, jobs and schedules.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from dagster import (
    AssetCheckKey,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DefaultScheduleStatus,
    MaterializeResult,
    TableSchema,
    TimeWindowPartitionMapping,
    asset,
    build_schedule_context,
    materialize,
)

import snapshot_platform.definitions as definitions_module
from snapshot_platform_tests.conftest import reader_url
from snapshot_platform.catalog import DEMO_CATALOG, Catalog, load_catalog
from snapshot_platform.orchestration.definitions import build_assets, build_definitions, build_resources
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.store import SnapshotStore, sha256_text

MAIN = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAME = "orders"
KEY = AssetKey(["snapshots", NAME])
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
QUERY = (
    "SELECT id, day, amount, status\n"
    "FROM orders\n"
    "WHERE day >= :partition_start AND day < :partition_end\n"
)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def orders_db(pg_database: str) -> str:
    """``orders``: ids 1..12, three per day 2024-01-01..04, amount id * 1.25."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, day date NOT NULL, amount numeric(10, 2), status text)"
        )
        conn.execute(
            "INSERT INTO orders SELECT g, date '2024-01-01' + (g - 1) / 3, g * 1.25, 'open'"
            " FROM generate_series(12, 1, -1) g"
        )
    return pg_database


@pytest.fixture
def catalog_path(orders_db: str, write_catalog: Callable[..., Path]) -> Path:
    return write_catalog(
        {
            "sources": {"shop": {"kind": "postgres", "url": reader_url(orders_db), "statement_timeout_s": 60}},
            "snapshots": {
                NAME: {
                    "source": "shop",
                    "description": "Orders placed in the partition's day",
                    "query": QUERY,
                    "partitions": {"cadence": "daily", "start": "2024-01-01"},
                    "key": ["id"],
                    "not_null": ["id", "day"],
                }
            },
        }
    )


@pytest.fixture
def catalog(catalog_path: Path) -> Catalog:
    return load_catalog(catalog_path)


@pytest.fixture
def instance(platform_env: Any) -> Iterator[DagsterInstance]:
    """A persistent instance in the test's DAGSTER_HOME (tmp_path)."""
    with DagsterInstance.get() as inst:
        yield inst


def sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def materialize_snapshot(catalog: Catalog, storage: Path, instance: DagsterInstance, partition: str) -> Any:
    result = materialize(
        build_assets(catalog),
        partition_key=partition,
        resources=build_resources(str(storage)),
        instance=instance,
    )
    assert result.success
    return result


def the_materialization(result: Any) -> Any:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == KEY]
    assert len(events) == 1
    return events[0].step_materialization_data.materialization


def meta(materialization: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


# ---------------------------------------------------------------- (a) materialize


@pytest.mark.postgres
def test_materialize_records_the_metadata_contract(
    catalog: Catalog, platform_env: Any, instance: DagsterInstance
) -> None:
    result = materialize_snapshot(catalog, platform_env.storage, instance, "2024-01-02")
    mat = the_materialization(result)
    md = meta(mat)
    store = SnapshotStore(platform_env.storage)
    manifest = store.latest(NAME, "2024-01-02")
    version = manifest.version

    assert mat.partition == "2024-01-02"
    assert md["dagster/row_count"] == 3 == manifest.row_count
    schema = md["dagster/column_schema"]
    assert isinstance(schema, TableSchema)
    assert [(c.name, c.type) for c in schema.columns] == [
        ("id", "int32"),
        ("day", "date32[day]"),
        ("amount", "decimal128(10, 2)"),
        ("status", "string"),
    ]
    uri = md["dagster/uri"]
    assert uri.startswith("file://") and uri.endswith(f"/snapshots/{NAME}/2024-01-02/{version}")
    assert (Path(uri.removeprefix("file://")) / "manifest.json").is_file()
    assert md["snapshot/version"] == version
    assert md["snapshot/new_version"] is True
    assert mat.tags["dagster/data_version"] == version
    # hashes: the files recorded equal the manifest's, and the bytes on disk match them
    # files as a table (path, rows, bytes, sha256), the manifest as a path, created_at as a timestamp
    assert [r.data for r in md["snapshot/files"].records] == [
        {"path": f.path, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in manifest.files]
    assert Path(md["snapshot/manifest"]).is_file() and md["snapshot/manifest"].endswith("/manifest.json")
    assert md["snapshot/created_at"] == dt.datetime.fromisoformat(manifest.created_at).timestamp()
    assert [(r.data["partition"], r.data["version"]) for r in md["snapshot/partitions"].records] == [
        ("2024-01-02", version)]
    assert md["snapshot/query_sha256"] == sha256_text(QUERY) == manifest.query_sha256
    assert QUERY.strip() in md["snapshot/query"]
    assert md["snapshot/params"] == {
        "partition_start": "2024-01-02T00:00:00+00:00",
        "partition_end": "2024-01-03T00:00:00+00:00",
    }
    assert md["snapshot/source"]["kind"] == "postgres"
    assert {"snapshot", "xmin", "wal_lsn"} <= set(md["snapshot/source_state"])
    assert store.verify_version(manifest) == []
    # the manifest mirrors the run
    assert manifest.dagster_run_id == result.run_id
    # the record Dagster keeps is what the IO manager will read
    records = instance.fetch_materializations(KEY, limit=1).records
    assert records[0].asset_materialization.metadata["snapshot/version"].value == version
    # per-partition checks ran inside the asset and passed
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    assert store.read_table(NAME, "2024-01-02").column("id").to_pylist() == [4, 5, 6]


@pytest.mark.postgres
def test_rematerializing_same_data_same_version_changed_data_new_version(
    catalog: Catalog, orders_db: str, platform_env: Any, instance: DagsterInstance
) -> None:
    store = SnapshotStore(platform_env.storage)
    first = meta(the_materialization(materialize_snapshot(catalog, platform_env.storage, instance, "2024-01-01")))
    def snapshot_files() -> list[Path]:  # the published tree; a republish's touch marker (.touched/) is gc's
        return sorted(p.relative_to(platform_env.storage) for p in platform_env.storage.rglob("*")
                      if p.relative_to(platform_env.storage).parts[0] != ".touched")

    files_before = snapshot_files()

    again = meta(the_materialization(materialize_snapshot(catalog, platform_env.storage, instance, "2024-01-01")))
    assert again["snapshot/version"] == first["snapshot/version"]
    assert again["snapshot/new_version"] is False
    assert snapshot_files() == files_before

    sql(orders_db, "UPDATE orders SET amount = amount + 100, status = 'paid' WHERE id = 2")
    changed_result = materialize_snapshot(catalog, platform_env.storage, instance, "2024-01-01")
    changed = meta(the_materialization(changed_result))
    assert changed["snapshot/version"] != first["snapshot/version"]
    assert changed["snapshot/new_version"] is True
    assert the_materialization(changed_result).tags["dagster/data_version"] == changed["snapshot/version"]

    # the old version is intact and loadable beside the new one
    versions = [m.version for m in store.versions(NAME, "2024-01-01")]
    assert versions == [first["snapshot/version"], changed["snapshot/version"]]
    old = store.read_table(NAME, "2024-01-01", first["snapshot/version"])
    new = store.read_table(NAME, "2024-01-01", changed["snapshot/version"])
    assert old.column("amount").to_pylist() == [Decimal("1.25"), Decimal("2.50"), Decimal("3.75")]
    assert new.column("amount").to_pylist() == [Decimal("1.25"), Decimal("102.50"), Decimal("3.75")]
    assert new.column("status").to_pylist() == ["open", "paid", "open"]
    assert all(store.verify_version(m) == [] for m in store.versions(NAME, "2024-01-01"))


@pytest.mark.postgres
def test_no_secret_reaches_dagster_metadata_or_logs(
    orders_db: str, platform_env: Any, write_catalog: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password in the source URL (trust auth ignores it) appears in no metadata, event or error text,
    on a successful run and on a failed connection."""
    secret = "Sup3r-s3cret-pw"
    monkeypatch.setenv("SP_TEST_SHOP_URL", reader_url(orders_db, password=secret))
    monkeypatch.setenv("SP_TEST_DOWN_URL", f"postgresql://postgres:{secret}@127.0.0.1:1/nowhere")
    doc = {
        "sources": {
            "shop": {"kind": "postgres", "url": {"env": "SP_TEST_SHOP_URL"}},
            "down": {"kind": "postgres", "url": {"env": "SP_TEST_DOWN_URL"}, "connect_timeout_s": 2},
        },
        "snapshots": {
            NAME: {"source": "shop", "query": QUERY, "partitions": {"cadence": "daily", "start": "2024-01-01"},
                   "key": ["id"]},
            "unreachable": {"source": "down", "query": QUERY,
                            "partitions": {"cadence": "daily", "start": "2024-01-01"}, "key": ["id"]},
        },
    }
    catalog = load_catalog(write_catalog(doc))
    with DagsterInstance.get() as inst:
        ok = materialize(build_assets(catalog), selection=[KEY], partition_key="2024-01-02",
                         resources=build_resources(str(platform_env.storage)), instance=inst)
        assert ok.success
        failed = materialize(build_assets(catalog), selection=[AssetKey(["snapshots", "unreachable"])],
                             partition_key="2024-01-02", resources=build_resources(str(platform_env.storage)),
                             instance=inst, raise_on_error=False)
        assert not failed.success
        failure = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        error_text = failure[0].event_specific_data.error.to_string() if failure else ""
        assert "SourceError" in error_text and "connect" in error_text and secret not in error_text
        for run_id in (ok.run_id, failed.run_id):
            text = "\n".join(repr(e) for e in inst.all_logs(run_id))
            assert secret not in text
    manifests = list(platform_env.storage.rglob("manifest.json"))
    assert len(manifests) == 1 and secret not in manifests[0].read_text()


# ---------------------------------------------------------------- (b) downstream window through the IO manager


def consumer_with(catalog: Catalog, seen: dict[str, Any], annotation: Any) -> AssetsDefinition:
    if annotation is pa.Table:

        @asset(
            key=AssetKey(["features", NAME]),
            ins={"snap": AssetIn(key=KEY, partition_mapping=TimeWindowPartitionMapping(start_offset=-2))},
            partitions_def=partitions_def(catalog.snapshots[NAME].partitions),
        )
        def three_days_arrow(snap: pa.Table) -> MaterializeResult:
            seen["snap"] = snap
            return MaterializeResult()

        return three_days_arrow

    @asset(
        key=AssetKey(["features", NAME]),
        ins={"snap": AssetIn(key=KEY, partition_mapping=TimeWindowPartitionMapping(start_offset=-2))},
        partitions_def=partitions_def(catalog.snapshots[NAME].partitions),
    )
    def three_days(snap: pd.DataFrame) -> MaterializeResult:
        seen["snap"] = snap
        return MaterializeResult()

    return three_days


def load_window(catalog: Catalog, storage: Path, instance: DagsterInstance, annotation: Any = pd.DataFrame) -> Any:
    seen: dict[str, Any] = {}
    consumer = consumer_with(catalog, seen, annotation)
    result = materialize(
        [*build_assets(catalog), consumer],
        selection=[consumer],
        partition_key=DAYS[-1],
        resources=build_resources(str(storage)),
        instance=instance,
    )
    assert result.success
    return seen["snap"]


@pytest.mark.postgres
def test_downstream_window_loads_the_versions_dagster_recorded(
    catalog: Catalog, orders_db: str, platform_env: Any, instance: DagsterInstance
) -> None:
    store = SnapshotStore(platform_env.storage)
    for day in DAYS:
        materialize_snapshot(catalog, platform_env.storage, instance, day)
    # 2024-01-02 changes and is re-materialized through Dagster: that version is the recorded one
    sql(orders_db, "UPDATE orders SET status = 'paid' WHERE id = 5")
    recorded = meta(the_materialization(materialize_snapshot(catalog, platform_env.storage, instance, DAYS[1])))
    # ... then changes again and is published outside Dagster: newer in storage, unknown to Dagster
    sql(orders_db, "UPDATE orders SET status = 'refunded', amount = 0 WHERE id IN (4, 5, 6)")
    unrecorded = take_snapshot(catalog, NAME, DAYS[1], store).result
    assert unrecorded.created and unrecorded.version != recorded["snapshot/version"]
    assert store.latest(NAME, DAYS[1]).version == unrecorded.version
    assert len(store.versions(NAME, DAYS[1])) == 3

    df = load_window(catalog, platform_env.storage, instance)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["id", "day", "amount", "status", "_partition"]
    assert df["id"].tolist() == list(range(1, 10))
    assert df["_partition"].tolist() == [d for d in DAYS for _ in range(3)]
    assert df["day"].tolist() == [dt.date.fromisoformat(d) for d in DAYS for _ in range(3)]
    # the recorded version of 2024-01-02, not the newer unrecorded one
    assert df["status"].tolist() == ["open"] * 4 + ["paid"] + ["open"] * 4
    assert df["amount"].tolist() == [Decimal(i) * Decimal("1.25") for i in range(1, 10)]


@pytest.mark.postgres
def test_downstream_window_falls_back_to_latest_in_storage_without_records(
    catalog: Catalog, orders_db: str, platform_env: Any
) -> None:
    store = SnapshotStore(platform_env.storage)
    for day in DAYS:
        take_snapshot(catalog, NAME, day, store)  # published outside Dagster
    sql(orders_db, "UPDATE orders SET status = 'refunded' WHERE id = 9")
    assert take_snapshot(catalog, NAME, DAYS[2], store).result.created

    df = load_window(catalog, platform_env.storage, DagsterInstance.ephemeral())
    assert df["_partition"].tolist() == [d for d in DAYS for _ in range(3)]
    assert df["status"].tolist() == ["open"] * 8 + ["refunded"]

    table = load_window(catalog, platform_env.storage, DagsterInstance.ephemeral(), annotation=pa.Table)
    assert isinstance(table, pa.Table)
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    assert table.column("_partition").to_pylist() == [d for d in DAYS for _ in range(3)]
    assert table.num_rows == 9


# ---------------------------------------------------------------- (c) the dagster CLI


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dagster"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_dagster_cli_materializes_a_partition(catalog_path: Path, platform_env: Any, tmp_path: Path) -> None:
    env = platform_env.environ(SNAPSHOT_PLATFORM_CATALOG=str(catalog_path))
    proc = run_cli(
        ["asset", "materialize", "-m", "snapshot_platform.definitions",
         "--select", f"snapshots/{NAME}", "--partition", "2024-01-03"],
        env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    manifests = list((platform_env.storage / "snapshots" / NAME / "2024-01-03").glob("*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["row_count"] == 3
    assert manifest["dagster_run_id"]
    assert manifest["params"]["partition_start"] == "2024-01-03T00:00:00+00:00"
    # the run and its materialization are recorded in the test's DAGSTER_HOME
    with DagsterInstance.get() as inst:
        records = inst.fetch_materializations(KEY, limit=1).records
        assert records[0].run_id == manifest["dagster_run_id"]
        assert records[0].asset_materialization.partition == "2024-01-03"
        assert records[0].asset_materialization.metadata["snapshot/version"].value == manifest["version"]


# ---------------------------------------------------------------- (d) loading the definitions


@pytest.mark.slow
@pytest.mark.postgres
def test_workspace_yaml_loads_the_definitions(catalog_path: Path, platform_env: Any) -> None:
    env = platform_env.environ(SNAPSHOT_PLATFORM_CATALOG=str(catalog_path))
    proc = run_cli(["definitions", "validate", "-w", "workspace.yaml"], env, cwd=MAIN)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "snapshot_platform" in out and "Validation successful" in out

    listed = run_cli(["asset", "list", "-m", "snapshot_platform.definitions"], env, cwd=MAIN)
    assert listed.returncode == 0, (listed.stdout + listed.stderr)[-3000:]
    assert f"snapshots/{NAME}" in listed.stdout.split()


@pytest.mark.slow
def test_workspace_with_a_bad_catalog_fails_validation_naming_file_entry_and_field(
    platform_env: Any, write_catalog: Callable[..., Path]
) -> None:
    bad = write_catalog(
        {
            "sources": {"db": {"kind": "sqlite", "path": "x.sqlite"}},
            "snapshots": {
                "broken": {
                    "source": "db",
                    "query": "SELECT 1 AS id WHERE :partition_start < :partition_end",
                    "partitions": {"cadence": "fortnightly", "start": "2024-01-01"},
                    "key": ["id"],
                }
            },
        },
        name="bad.yaml",
    )
    proc = run_cli(
        ["definitions", "validate", "-w", "workspace.yaml"],
        platform_env.environ(SNAPSHOT_PLATFORM_CATALOG=str(bad)),
        cwd=MAIN,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(bad) in out and "snapshots.broken" in out and "partitions.cadence" in out


def fresh_definitions_module(name: str) -> Any:
    """Execute snapshot_platform/definitions.py anew, as a separate module, under the current env."""
    spec = importlib.util.spec_from_file_location(name, definitions_module.__file__)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe(defs: Any) -> dict[str, Any]:
    """What a reviewer should notice changing: keys, checks, jobs, schedules, resources."""
    graph = defs.resolve_asset_graph()
    return {
        "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
        "checks": sorted(k.to_user_string() for k in graph.asset_check_keys),
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "schedules": {
            s.name: (s.cron_schedule, s.job_name, s.execution_timezone, s.default_status.value)
            for s in (defs.resolve_schedule_def(u.name) for u in defs.schedules)
        },
        "resources": sorted(defs.resources),
    }


DEMO_SNAPSHOT = {
    "assets": ["models/churn", "snapshots/customer_data"],
    "checks": [
        "snapshots/customer_data:column_rules_churn_label",
        "snapshots/customer_data:column_rules_country",
        "snapshots/customer_data:column_rules_total_purchases",
        "snapshots/customer_data:key_unique",
        "snapshots/customer_data:min_rows",
        "snapshots/customer_data:not_null",
        "snapshots/customer_data:schema_unchanged",
        "snapshots/customer_data:volume",
    ],
    "jobs": ["models_churn", "snapshots_daily"],
    "schedules": {
        "snapshots_daily_schedule": ("0 0 * * *", "snapshots_daily", "UTC", "STOPPED"),
    },
    "resources": ["mlflow", "snapshot_io_manager", "snapshot_store"],
}


def test_demo_definitions_snapshot(platform_env: Any) -> None:
    module = fresh_definitions_module("snapshot_platform_definitions_demo")
    assert describe(module.defs) == DEMO_SNAPSHOT
    # the module the CLI loads, as imported by this test session, is the same when the env is unset
    assert describe(definitions_module.build_definitions(load_catalog(DEMO_CATALOG))) == DEMO_SNAPSHOT

    defs = module.defs
    ad = defs.resolve_assets_def(AssetKey(["snapshots", "customer_data"]))
    (spec,) = [s for s in defs.resolve_all_asset_specs() if s.key == ad.key]
    assert spec.group_name == "snapshots"
    assert spec.kinds == {"sqlite", "parquet"}
    assert spec.tags["domain"] == "growth"
    assert spec.freshness_policy is not None
    assert spec.code_version
    assert ad.get_io_manager_key_for_asset_key(ad.key) == "snapshot_io_manager"
    assert ad.op.pool == "source_demo_db"
    assert ad.partitions_def.get_partition_keys() == [f"2024-01-0{d}" for d in range(1, 8)]
    assert defs.resolve_schedule_def("snapshots_daily_schedule").default_status == DefaultScheduleStatus.STOPPED
    # the store resource points at SNAPSHOT_PLATFORM_STORAGE_URL, read when the definitions load
    assert defs.resources["snapshot_store"].storage_url == str(platform_env.storage)


@pytest.mark.postgres
def test_definitions_follow_the_catalog_variable(
    catalog_path: Path, platform_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAPSHOT_PLATFORM_CATALOG", str(catalog_path))
    module = fresh_definitions_module("snapshot_platform_definitions_pg")
    described = describe(module.defs)
    assert described["assets"] == [f"snapshots/{NAME}"]
    assert described["jobs"] == ["snapshots_daily"]
    assert list(described["schedules"]) == ["snapshots_daily_schedule"]
    assert f"snapshots/{NAME}:not_null" in described["checks"]
    ad = module.defs.resolve_assets_def(KEY)
    assert ad.op.pool == "source_shop"
    (spec,) = [s for s in module.defs.resolve_all_asset_specs() if s.key == KEY]
    assert spec.kinds == {"postgres", "parquet"}


def test_one_schedule_per_partitions_definition_requests_one_run_per_snapshot(
    platform_env: Any, write_catalog: Callable[..., Path]
) -> None:
    """Snapshots sharing cadence, start and end share a job and a schedule (named from the cadence;
    groups sharing a cadence are told apart by start and end); a tick requests one run per snapshot,
    for the partition that closed at the scheduled time, with a run key that makes the tick idempotent."""
    query = "SELECT 1 AS id WHERE :partition_start < :partition_end"

    def entry(partitions: dict[str, Any]) -> dict[str, Any]:
        return {"source": "db", "query": query, "partitions": partitions, "key": ["id"], "not_null": ["id"]}

    catalog = load_catalog(write_catalog({
        "sources": {"db": {"kind": "sqlite", "path": "x.sqlite"}},
        "snapshots": {
            "a": entry({"cadence": "daily", "start": "2024-01-01"}),
            "b": entry({"cadence": "daily", "start": "2024-01-01"}),
            "c": entry({"cadence": "daily", "start": "2024-02-01", "end": "2024-03-01"}),
            "h": entry({"cadence": "hourly", "start": "2024-01-01"}),
            "m": entry({"cadence": "monthly", "start": "2023-01-01"}),
        },
    }))
    defs = build_definitions(catalog)
    described = describe(defs)
    assert described["jobs"] == ["snapshots_daily_from_20240101", "snapshots_daily_from_20240201_to_20240301",
                                 "snapshots_hourly", "snapshots_monthly"]
    assert described["schedules"] == {
        "snapshots_daily_from_20240101_schedule": ("0 0 * * *", "snapshots_daily_from_20240101", "UTC", "STOPPED"),
        "snapshots_daily_from_20240201_to_20240301_schedule":
            ("0 0 * * *", "snapshots_daily_from_20240201_to_20240301", "UTC", "STOPPED"),
        "snapshots_hourly_schedule": ("0 * * * *", "snapshots_hourly", "UTC", "STOPPED"),
        "snapshots_monthly_schedule": ("0 0 1 * *", "snapshots_monthly", "UTC", "STOPPED"),
    }
    repo = defs.get_repository_def()

    def tick(schedule: str, at: dt.datetime) -> Any:
        context = build_schedule_context(scheduled_execution_time=at, repository_def=repo)
        return defs.resolve_schedule_def(schedule).evaluate_tick(context)

    at = dt.datetime(2024, 2, 10, 0, 0, tzinfo=dt.timezone.utc)
    result = tick("snapshots_daily_from_20240101_schedule", at)
    requests = [(r.asset_selection, r.partition_key, r.run_key) for r in result.run_requests]
    assert requests == [
        ([AssetKey(["snapshots", "a"])], "2024-02-09", "a:2024-02-09"),
        ([AssetKey(["snapshots", "b"])], "2024-02-09", "b:2024-02-09"),
    ]
    # evaluated again (a daemon restarted mid-tick): the same run keys, which Dagster launches once
    assert [r.run_key for r in tick("snapshots_daily_from_20240101_schedule", at).run_requests] == ["a:2024-02-09",
                                                                                                   "b:2024-02-09"]
    hourly = tick("snapshots_hourly_schedule", dt.datetime(2024, 2, 10, 7, 0, tzinfo=dt.timezone.utc)).run_requests
    assert [(r.asset_selection, r.partition_key, r.run_key) for r in hourly] == [
        ([AssetKey(["snapshots", "h"])], "2024-02-10-06:00", "h:2024-02-10-06:00")]
    monthly = tick("snapshots_monthly_schedule", at).run_requests
    assert [(r.partition_key, r.run_key) for r in monthly] == [("2024-01-01", "m:2024-01-01")]
    # before its start, a group has no closed partition: the tick is skipped, nothing is requested
    early = tick("snapshots_daily_from_20240201_to_20240301_schedule", at.replace(month=1))
    assert early.run_requests == [] and early.skip_message
    # a run is one snapshot with its checks, as its source's pool expects
    job = repo.get_job("snapshots_daily_from_20240101").get_subset(asset_selection={AssetKey(["snapshots", "a"])})
    assert job.asset_layer.asset_graph.get_all_asset_keys() == {AssetKey(["snapshots", "a"])}
    assert AssetCheckKey(AssetKey(["snapshots", "a"]), "not_null") in job.asset_layer.asset_graph.asset_check_keys
