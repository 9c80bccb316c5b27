"""Integrity checks: each failure built in PostgreSQL, asserted in the manifest and in Dagster.

The checks' logic on Arrow batches built in memory, without a server: unit/test_checks.py.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest
from dagster import AssetIn, AssetKey, DagsterInstance, TimeWindowPartitionMapping, asset, materialize

from snapshot_platform.catalog import parse_catalog
from snapshot_platform.orchestration.definitions import build_assets, build_definitions, build_resources
from snapshot_platform.gate import UntrainableSnapshot, assert_trainable
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.conftest import reader_url

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]


def _catalog(url: str, **checks) -> dict:
    return {
        "sources": {"pg": {"kind": "postgres", "url": reader_url(url), "statement_timeout_s": 30}},
        "snapshots": {
            "orders": {
                "source": "pg",
                "query": "SELECT * FROM orders WHERE day >= :partition_start AND day < :partition_end",
                "partitions": {"cadence": "daily", "start": "2024-03-01"},
                "key": ["order_id"],
                "not_null": ["order_id", "amount"],
                "checks": checks,
            }
        },
    }


def _seed(url: str, per_day: int = 50) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (order_id int, day date NOT NULL, amount numeric(10,2), status text)"
        )
        rows = []
        oid = 1
        for d in DAYS:
            for _ in range(per_day):
                rows.append((oid, dt.date.fromisoformat(d), oid % 97 + 0.5, "paid"))
                oid += 1
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", rows)


def _run(catalog_doc: dict, storage: Path, instance: DagsterInstance, day: str, extra_assets=()):
    catalog = parse_catalog(catalog_doc)
    return materialize(
        [*build_assets(catalog), *extra_assets],
        partition_key=day,
        instance=instance,
        resources=build_resources(str(storage)),
        raise_on_error=False,
    )


def _check_evaluations(result) -> dict[str, object]:
    out = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            data = ev.event_specific_data
            out[data.check_name] = data
    return out


@pytest.fixture
def orders_db(pg_database: str) -> str:
    _seed(pg_database)
    return pg_database


def test_clean_partitions_pass_every_check(orders_db, platform_env):
    instance = DagsterInstance.get()
    result = _run(_catalog(orders_db), platform_env.storage, instance, DAYS[0])
    assert result.success
    evals = _check_evaluations(result)
    assert set(evals) == {"key_unique", "not_null", "min_rows", "schema_unchanged", "volume"}
    assert all(e.passed for e in evals.values())
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[0])
    assert all(c.passed for c in m.checks.values())
    assert m.checks["key_unique"].blocking is True
    assert assert_trainable(m) == []


def test_duplicated_key_is_caught_blocks_downstream_and_stays_as_evidence(orders_db, platform_env):
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT order_id, day, amount, status FROM orders WHERE order_id IN (60, 61)")
    catalog = parse_catalog(_catalog(orders_db))
    ran = []

    @asset(
        key=AssetKey(["downstream"]),
        partitions_def=partitions_def(catalog.snapshots["orders"].partitions),
        ins={"snap": AssetIn(key=AssetKey(["snapshots", "orders"]),
                             partition_mapping=TimeWindowPartitionMapping())},
    )
    def downstream(snap):
        ran.append(len(snap))

    instance = DagsterInstance.get()
    result = _run(_catalog(orders_db), platform_env.storage, instance, DAYS[1], [downstream])
    assert not result.success, "a failed blocking check must fail the run"
    assert ran == [], "downstream of a failed blocking check must not run"
    evals = _check_evaluations(result)
    assert evals["key_unique"].passed is False
    md = evals["key_unique"].metadata
    assert md["duplicate_rows"].value == 2
    assert sorted(md["details"].value["examples"]) == [60, 61]
    # the version is published as evidence, with the failed check recorded in its manifest
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[1])
    assert m.row_count == 52
    assert m.checks["key_unique"].passed is False
    assert m.checks["key_unique"].details["duplicate_rows"] == 2
    with pytest.raises(UntrainableSnapshot, match="key_unique"):
        assert_trainable(m)
    assert assert_trainable(m, override_reason="known duplicate from a replayed import") == ["key_unique"]


def test_null_in_required_column_is_caught(orders_db, platform_env):
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("UPDATE orders SET amount = NULL WHERE order_id IN (101, 105, 109)")
    result = _run(_catalog(orders_db), platform_env.storage, DagsterInstance.get(), DAYS[2])
    assert not result.success
    evals = _check_evaluations(result)
    assert evals["not_null"].passed is False
    details = evals["not_null"].metadata["details"].value
    assert details["null_rows"] == {"amount": 3}
    assert details["examples"]["amount"] == [101, 105, 109]
    assert evals["key_unique"].passed is True
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[2])
    assert m.checks["not_null"].passed is False


def test_dropped_and_added_columns_warn_by_default_and_block_when_asked(orders_db, platform_env, write_catalog):
    instance = DagsterInstance.get()
    assert _run(_catalog(orders_db), platform_env.storage, instance, DAYS[0]).success
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders DROP COLUMN status")
        conn.execute("ALTER TABLE orders ADD COLUMN channel text DEFAULT 'web'")
    result = _run(_catalog(orders_db), platform_env.storage, instance, DAYS[1])
    assert result.success, "a schema change is a warning by default"
    ev = _check_evaluations(result)["schema_unchanged"]
    assert ev.passed is False
    assert ev.severity.value == "WARN"
    details = ev.metadata["details"].value
    assert details["removed"] == ["status"] and details["added"] == ["channel"]
    assert details["compared_with"] == DAYS[0]
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[1])
    assert m.checks["schema_unchanged"].passed is False
    assert assert_trainable(m) == []  # warnings do not gate training
    # the UI's column schema follows the new columns
    mat = next(e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION")
    cols = [c.name for c in mat.event_specific_data.materialization.metadata["dagster/column_schema"].value.columns]
    assert "channel" in cols and "status" not in cols

    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,3)")
    blocked = _run(_catalog(orders_db, schema_change="block"), platform_env.storage, instance, DAYS[2])
    assert not blocked.success
    ev = _check_evaluations(blocked)["schema_unchanged"]
    assert ev.passed is False and ev.severity.value == "ERROR"
    assert ev.metadata["details"].value["type_changed"] == {
        "amount": {"from": "decimal128(10, 2)", "to": "decimal128(12, 3)"}}


def test_collapsed_volume_warns(orders_db, platform_env):
    instance = DagsterInstance.get()
    doc = _catalog(orders_db, volume={"trailing": 3, "tolerance": 0.5, "min_history": 3})
    for d in DAYS[:3]:
        assert _run(doc, platform_env.storage, instance, d).success
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE day = '2024-03-04' AND order_id % 10 <> 0")
    result = _run(doc, platform_env.storage, instance, DAYS[3])
    assert result.success, "volume is a warning by default"
    ev = _check_evaluations(result)["volume"]
    assert ev.passed is False
    details = ev.metadata["details"].value
    assert details["row_count"] == 5 and details["trailing_median"] == 50
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[3])
    assert m.checks["volume"].as_dict() == {"passed": False, "blocking": False, "severity": "WARN", "details": details}


def test_column_rules_and_min_rows(orders_db, platform_env):
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = 'refunded' WHERE order_id IN (201, 202)")
        conn.execute("UPDATE orders SET amount = -5 WHERE order_id = 203")
    doc = _catalog(orders_db, min_rows=60, columns={
        "status": {"accepted_values": ["paid", "open"], "blocking": True},
        "amount": {"min": 0, "max": 1000},
    })
    result = _run(doc, platform_env.storage, DagsterInstance.get(), DAYS[4])
    assert not result.success
    evals = _check_evaluations(result)
    assert evals["min_rows"].passed is False
    assert evals["column_rules_status"].passed is False
    assert evals["column_rules_status"].metadata["rows_not_accepted"].value == 2
    assert evals["column_rules_amount"].passed is False
    assert evals["column_rules_amount"].metadata["rows_below_min"].value == 1
    assert evals["column_rules_amount"].metadata["details"].value["examples"] == [203]
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[4])
    assert sorted(n for n, c in m.checks.items() if not c.passed) == [
        "column_rules_amount", "column_rules_status", "min_rows"]


def test_republishing_the_same_version_reports_its_recorded_checks(orders_db, platform_env):
    instance = DagsterInstance.get()
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 10")
    first = _run(_catalog(orders_db), platform_env.storage, instance, DAYS[0])
    again = _run(_catalog(orders_db), platform_env.storage, instance, DAYS[0])
    assert not first.success and not again.success
    assert _check_evaluations(again)["key_unique"].passed is False
    assert len(SnapshotStore(platform_env.storage).versions("orders", DAYS[0])) == 1


def test_cli_show_and_verify_report_checks(orders_db, platform_env):
    import subprocess
    import sys

    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute("UPDATE orders SET amount = NULL WHERE order_id = 1")
    _run(_catalog(orders_db), platform_env.storage, DagsterInstance.get(), DAYS[0])
    cli = [sys.executable, "-m", "snapshot_platform.cli", "--storage", str(platform_env.storage)]
    show = subprocess.run([*cli, "show", "orders", DAYS[0]], capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    assert "not_null" in show.stdout and "FAILED" in show.stdout and "NOT TRAINABLE" in show.stdout
    verify = subprocess.run([*cli, "verify", "--json"], capture_output=True, text=True)
    assert verify.returncode == 0, "check failures are not integrity mismatches"
    report = json.loads(verify.stdout)
    assert report["results"][0]["failed_blocking_checks"] == ["not_null"]
    strict = subprocess.run([*cli, "verify", "--fail-on-checks"], capture_output=True, text=True)
    assert strict.returncode == 1
    assert "blocking checks failed (not trainable): not_null" in strict.stdout


# ------------------------------------------------------------------ the gate, end to end: data → Dagster → MLflow


def test_a_failed_blocking_check_keeps_the_partition_out_of_every_model(pg_database, platform_env, tmp_path,
                                                                         monkeypatch):
    """A duplicated key in PostgreSQL: the snapshot's check fails, training in the same run does not
    start, a later training run refuses the version, and MLflow records no run until an explicit,
    logged override."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (order_id int, day date NOT NULL, amount numeric(10,2), paid int)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)",
                            [(i, dt.date(2024, 3, 1), i % 50 + 0.5, int(i % 3 == 0)) for i in range(1, 201)])
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 7")
    doc = _catalog(pg_database)
    doc["models"] = {"paid": {
        "snapshot": "orders", "partitions": 1, "features": ["amount"], "target": "paid",
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
        "split": {"test_fraction": 0.25, "by": "order_id"},
    }}
    catalog = parse_catalog(doc)
    instance = DagsterInstance.get()
    resources = build_resources(str(platform_env.storage))

    def experiments_runs() -> int:
        client = mlflow.tracking.MlflowClient()
        return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())

    both = materialize(build_assets(catalog), partition_key=DAYS[0], instance=instance, resources=resources,
                       raise_on_error=False)
    assert not both.success
    assert _check_evaluations(both)["key_unique"].passed is False
    steps = {e.step_key for e in both.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "models__paid" not in steps
    m = SnapshotStore(platform_env.storage).latest("orders", DAYS[0])
    assert m.checks["key_unique"].details["examples"] == [7]

    later = materialize(build_assets(catalog), selection=[AssetKey(["models", "paid"])], partition_key=DAYS[0],
                        instance=instance, resources=resources, raise_on_error=False)
    assert not later.success
    failure = next(e for e in later.all_events if e.event_type_value == "STEP_FAILURE")
    assert "key_unique" in failure.event_specific_data.error.to_string()
    assert experiments_runs() == 0, "nothing may train on a version that failed a blocking check"

    reason = "duplicate from a replayed import; accepted by the data owner"
    overridden = materialize(
        build_assets(catalog), selection=[AssetKey(["models", "paid"])], partition_key=DAYS[0],
        instance=instance, resources=resources,
        run_config={"ops": {"models__paid": {"config": {"allow_failed_checks_reason": reason}}}},
    )
    assert overridden.success
    runs = mlflow.tracking.MlflowClient().search_runs(
        [e.experiment_id for e in mlflow.tracking.MlflowClient().search_experiments()])
    assert len(runs) == 1
    assert runs[0].data.params["allow_failed_checks_reason"] == reason


# ------------------------------------------------------------------ automation: retrain on a new, passing version


def test_a_model_retrains_on_each_new_snapshot_version_that_passed_its_blocking_checks(pg_database, platform_env):
    """The model's automation condition, evaluated as the default automation sensor would: a new
    version trains, an unchanged re-snapshot does not, a version that failed a blocking check does not."""
    from dagster import evaluate_automation_conditions

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (order_id int, day date NOT NULL, amount numeric(10,2), paid int)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)",
                            [(i, dt.date(2024, 3, 1), i % 50 + 0.5, int(i % 3 == 0)) for i in range(1, 101)])
    doc = _catalog(pg_database)
    doc["models"] = {"paid": {
        "snapshot": "orders", "features": ["amount"], "target": "paid",
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    }}
    catalog = parse_catalog(doc)
    defs = build_definitions(catalog, storage_url=str(platform_env.storage))
    instance = DagsterInstance.get()
    model = AssetKey(["models", "paid"])
    tick = dt.datetime(2024, 3, 2, 6, tzinfo=dt.timezone.utc)  # the latest complete day: 2024-03-01
    cursor = None

    def requested() -> set[str]:
        nonlocal cursor, tick
        tick += dt.timedelta(minutes=1)
        result = evaluate_automation_conditions(defs, instance, evaluation_time=tick, cursor=cursor)
        cursor = result.cursor
        return set(result.get_requested_partitions(model))

    def snapshot() -> object:  # the snapshot alone, as its schedule runs it
        return materialize(build_assets(catalog), selection=[AssetKey(["snapshots", "orders"])],
                           partition_key=DAYS[0], instance=instance,
                           resources=build_resources(str(platform_env.storage)), raise_on_error=False)

    assert requested() == set(), "nothing to train on yet"
    first = snapshot()
    assert first.success
    assert requested() == {DAYS[0]}, "a first version, its checks passed"
    assert requested() == set(), "handled: not requested twice"

    assert snapshot().success  # the source did not change: the same version again
    assert requested() == set()

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE orders SET paid = 1 - paid WHERE order_id <= 10")
    assert snapshot().success
    assert requested() == {DAYS[0]}, "a new version trains"

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 7")
    failed = snapshot()
    assert not failed.success and _check_evaluations(failed)["key_unique"].passed is False
    assert requested() == set(), "a version that failed a blocking check trains nothing"


def test_checks_run_on_the_streamed_rows_equal_the_checks_of_the_published_parts(pg_database, tmp_path):
    """The checks see each batch on its way to the writer (capture.py): their recorded outcomes are
    those of the published parts, read back and checked anew, failures and examples included, over a
    partition of several driver batches and several read-back batches (65,536 rows each)."""
    from snapshot_platform.capture import check_columns, partition_history
    from snapshot_platform.checks import run_checks
    from snapshot_platform.drift import build_reference, trailing_manifests
    from snapshot_platform_tests.capture_runs import take_snapshot

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (order_id int, day date NOT NULL, amount numeric(10,2), status text)")
        for i, d in enumerate(DAYS[:3]):
            rows = 150_000 if i == 2 else 40_000
            conn.execute(
                "INSERT INTO orders SELECT g, %s::date,"
                " CASE WHEN g %% 9973 = 0 THEN NULL ELSE (g %% 97) + 0.5 END,"
                " CASE WHEN g %% 5003 = 0 THEN 'lost' WHEN g %% 3 = 0 THEN 'refunded' ELSE 'paid' END"
                " FROM generate_series(%s::int, %s::int) AS g",
                (d, i * 1_000_000 + 1, i * 1_000_000 + rows))
        # duplicated keys across the read-back's batch boundary (row 65,536 of the day) and elsewhere
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id IN (2065536, 2065537, 2140000)")
    rules = {"amount": {"min": 1, "max": 90}, "status": {"accepted_values": ["paid", "refunded"]}}
    doc = _catalog(pg_database, columns=rules, drift={"columns": ["amount", "status"], "trailing": 2})
    catalog = parse_catalog(doc)
    spec = catalog.snapshots["orders"]
    store = SnapshotStore(str(tmp_path / "storage"))
    for day in DAYS[:3]:
        outcome = take_snapshot(catalog, "orders", day, store)
    m = outcome.result.manifest
    assert m.row_count == 150_003
    history = partition_history(store, "orders", DAYS[2], spec.checks.volume.trailing)
    history.drift = build_reference(store, trailing_manifests(store, "orders", DAYS[2], 2),
                                    ["amount", "status"])
    again = run_checks(spec, [c.as_dict() for c in m.schema],
                       store.iter_batches(m, columns=check_columns(spec)), history)
    recorded = {name: c.as_dict() for name, c in m.checks.items()}
    assert recorded == {name: json.loads(json.dumps(c.as_dict())) for name, c in again.items()}
    assert outcome.checks == m.checks
    # and the outcomes are not vacuous: each kind of failure was found, with its examples
    assert recorded["key_unique"]["passed"] is False
    assert recorded["key_unique"]["details"]["duplicate_rows"] == 3
    assert recorded["key_unique"]["details"]["examples"] == [2065536, 2065537, 2140000]
    assert recorded["not_null"]["details"]["null_rows"] == {"amount": 15}
    assert recorded["column_rules_amount"]["details"]["rows_above_max"] > 0
    assert recorded["column_rules_status"]["details"]["rows_not_accepted"] == 30
    assert recorded["drift"]["details"]["columns"]["amount"]["figure"] is not None
