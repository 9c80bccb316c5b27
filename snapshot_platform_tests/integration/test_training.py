"""Training end to end: ``models/<name>`` through ``dagster.materialize`` into a real MLflow SQLite store,
then ``reproduce`` and ``compare`` through the CLI after the source database changed.

One scenario is built once for the module (it is the slow part): the SQLite demo database, three
daily snapshots, a churn model trained on them (run A); then exactly 5 rows change, 2 are deleted
and 3 are added in the source, the partitions are snapshotted again and the model retrained (run B).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, materialize

from snapshot_platform.catalog import ModelSpec, load_catalog
from snapshot_platform.cli import main
from snapshot_platform.orchestration.definitions import build_assets, build_resources
from snapshot_platform.demo import source_db
from snapshot_platform.orchestration.metadata import VERSION_METADATA_KEY
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training.mlflow_logging import (
    TAG_DAGSTER_ASSET,
    TAG_DAGSTER_PARTITION,
    TAG_DAGSTER_RUN,
    TAG_FORMAT,
    TAG_OVERRIDE,
    TAG_PREDICTIONS,
    MlflowTracking,
)
from snapshot_platform.training.reproduce import reproduce_run
from snapshot_platform.training.train import train

BIN = Path(sys.executable).parent
SNAP = "customer_data"
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
CHURN_KEY = AssetKey(["models", "churn"])
AOV_KEY = AssetKey(["models", "aov"])
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def catalog(db: Path) -> dict[str, Any]:
    return {
        "sources": {"demo_db": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {SNAP: {
            "source": "demo_db",
            "query": ("SELECT customer_id, signup_date, country, total_purchases, avg_order_value, tenure_days, "
                      "churn_label FROM customers "
                      "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)"),
            "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"},
            "key": ["customer_id"],
        }},
        "models": {
            "churn": {
                "snapshot": SNAP, "partitions": 3,
                "features": ["total_purchases", "tenure_days", "avg_order_value"], "target": "churn_label",
                "estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                              "params": {"n_estimators": 15, "max_depth": 5}},  # random_state: seeded
                "split": {"test_fraction": 0.2, "by": "customer_id"},
            },
            "aov": {
                "snapshot": SNAP, "partitions": 2,
                "features": ["total_purchases", "tenure_days"], "target": "avg_order_value",
                "estimator": {"class": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
            },
        },
    }


@dataclass
class Scenario:
    root: Path
    db: Path
    storage: Path
    tracking_uri: str
    instance: DagsterInstance
    assets: list[Any]
    resources: dict[str, Any]
    run_a: str
    run_b: str
    dagster_run_a: str
    versions_a: dict[str, str]
    versions_b: dict[str, str]

    def tracking(self) -> MlflowTracking:
        return MlflowTracking(self.tracking_uri)

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.storage)

    def snapshot(self, pk: str) -> str:
        res = materialize(self.assets, selection=[AssetKey(["snapshots", SNAP])], partition_key=pk,
                          instance=self.instance, resources=self.resources, run_config=QUIET)
        (ev,) = res.get_asset_materialization_events()
        return str(ev.event_specific_data.materialization.metadata[VERSION_METADATA_KEY].value)

    def fit(self, key: AssetKey, pk: str, config: dict[str, Any] | None = None, **kw: Any) -> Any:
        run_config: dict[str, Any] = dict(QUIET)
        if config:
            run_config["ops"] = {"__".join(key.path): {"config": config}}
        return materialize(self.assets, selection=[key], partition_key=pk, instance=self.instance,
                           resources=self.resources, run_config=run_config, **kw)


def metadata(result: Any) -> dict[str, Any]:
    (ev,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in ev.event_specific_data.materialization.metadata.items()}


def change_source(db: Path) -> None:
    """Exactly: 5 rows change on 2024-01-02, 2 rows are deleted on 2024-01-03, 3 rows are added on 2024-01-01."""
    conn = sqlite3.connect(db)
    try:
        ids = [r[0] for r in conn.execute(
            "SELECT customer_id FROM customers WHERE signup_date = '2024-01-02' ORDER BY customer_id LIMIT 5")]
        conn.executemany("UPDATE customers SET total_purchases = total_purchases + 3 WHERE customer_id = ?",
                         [(i,) for i in ids])
        conn.execute("DELETE FROM customers WHERE customer_id IN (SELECT customer_id FROM customers "
                     "WHERE signup_date = '2024-01-03' ORDER BY customer_id LIMIT 2)")
        (top,) = conn.execute("SELECT max(customer_id) FROM customers").fetchone()
        conn.executemany("INSERT INTO customers VALUES (?, '2024-01-01', 'DE', 3, 42.5, 300, 1)",
                         [(top + i,) for i in (1, 2, 3)])
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("training")
    mp = pytest.MonkeyPatch()
    try:
        home, storage, dagster_home = root / "home", root / "storage", root / "dagster_home"
        for p in (home, storage, dagster_home):
            p.mkdir()
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        db = root / "source.sqlite"
        cat_path = root / "snapshots.yaml"
        cat_path.write_text(yaml.safe_dump(catalog(db), sort_keys=False))
        for k, v in {"SNAPSHOT_PLATFORM_HOME": str(home), "SNAPSHOT_PLATFORM_STORAGE_URL": str(storage),
                     "DAGSTER_HOME": str(dagster_home), "MLFLOW_TRACKING_URI": tracking_uri,
                     "SNAPSHOT_PLATFORM_CATALOG": str(cat_path),
                     "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
            mp.setenv(k, v)
        source_db.create(db)
        cat = load_catalog()
        sc = Scenario(root, db, storage, tracking_uri, DagsterInstance.get(), build_assets(cat),
                      build_resources(), "", "", "", {}, {})
        sc.versions_a = {pk: sc.snapshot(pk) for pk in DAYS}
        first = sc.fit(CHURN_KEY, DAYS[-1])
        sc.run_a, sc.dagster_run_a = metadata(first)["mlflow/run_id"], first.run_id
        change_source(db)
        sc.versions_b = {pk: sc.snapshot(pk) for pk in DAYS}
        sc.run_b = metadata(sc.fit(CHURN_KEY, DAYS[-1]))["mlflow/run_id"]
        yield sc
    finally:
        mp.undo()


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- lineage


def test_every_partition_got_a_new_version(scenario: Scenario) -> None:
    assert all(scenario.versions_a[pk] != scenario.versions_b[pk] for pk in DAYS)


def test_a_training_run_records_its_full_lineage(scenario: Scenario) -> None:
    tracking = scenario.tracking()
    client = tracking.client()
    run = client.get_run(scenario.run_a)
    store = scenario.store()

    # dataset inputs: one per snapshot version (its training rows), digest = version id, source = its
    # storage URI; and the evaluation split (the test rows), digest = the data version in the run's name
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == sorted([f"{SNAP}/{pk}" for pk in DAYS] + ["churn evaluation split"])
    for pk in DAYS:
        ds = inputs[f"{SNAP}/{pk}"]
        version = scenario.versions_a[pk]
        assert ds.dataset.digest == version
        assert json.loads(ds.dataset.source)["uri"] == store.uri(store.version_dir(SNAP, pk, version))
        tags = {t.key: t.value for t in ds.tags}
        assert tags["mlflow.data.context"] == "training" and tags["snapshot.version"] == version
    evaluation = inputs["churn evaluation split"]
    assert {t.key: t.value for t in evaluation.tags}["mlflow.data.context"] == "evaluation"
    data_version = run.data.tags["snapshot_platform.data_version"]
    assert evaluation.dataset.digest == data_version and len(data_version) == 8
    assert json.loads(evaluation.dataset.profile)["num_rows"] == int(run.data.params["rows_test"])
    train_rows = sum(json.loads(inputs[f"{SNAP}/{pk}"].dataset.profile)["num_rows"] for pk in DAYS)
    assert train_rows == int(run.data.params["rows_train"])
    # the run's name tells the two runs of one partition apart: model, partition, data version
    run_b = client.get_run(scenario.run_b)
    assert run.info.run_name == f"churn {DAYS[-1]} @ {data_version}"
    assert run_b.info.run_name == f"churn {DAYS[-1]} @ {run_b.data.tags['snapshot_platform.data_version']}"
    assert run_b.info.run_name != run.info.run_name
    # the metrics belong to the logged model and name the evaluation split ('Datasets used' on its page)
    (logged,) = client.search_logged_models([run.info.experiment_id],
                                            filter_string=f"source_run_id = '{scenario.run_a}'")
    linked = {m.key: m for m in logged.metrics}
    assert set(linked) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert {(m.dataset_name, m.dataset_digest) for m in linked.values()} == {("churn evaluation split", data_version)}
    assert all(m.run_id == scenario.run_a and m.value == run.data.metrics[k] for k, m in linked.items())

    # the lock: versions, file hashes, rows and query hash, as in the manifests
    lock = tracking.load_lock(scenario.run_a)
    assert (lock.model, lock.model_partition) == ("churn", DAYS[-1])
    for entry, pk in zip(lock.snapshots, DAYS):
        m = store.read_manifest(SNAP, pk, scenario.versions_a[pk])
        assert (entry.asset, entry.partition, entry.version) == (SNAP, pk, m.version)
        assert entry.row_count == m.row_count and entry.query_sha256 == m.query_sha256
        assert [f.sha256 for f in entry.files] == [f.sha256 for f in m.files]
        assert entry.key == ("customer_id",) and entry.mismatches(m) == []

    # tags linking Dagster, params, metrics, the model spec, figures
    t = run.data.tags
    assert t[TAG_DAGSTER_RUN] == scenario.dagster_run_a
    assert t[TAG_DAGSTER_ASSET] == "models/churn" and t[TAG_DAGSTER_PARTITION] == DAYS[-1]
    assert t[TAG_FORMAT] == "skops" and len(t[TAG_PREDICTIONS]) == 64
    assert t["library.scikit-learn"]
    p = run.data.params
    assert p["estimator_class"] == "sklearn.ensemble.RandomForestClassifier"
    assert p["estimator.n_estimators"] == "15" and p["estimator.random_state"] == "0"  # seeded, recorded
    assert p["snapshot_partitions"] == ",".join(DAYS) and p["split_by"] == "customer_id"
    assert int(p["rows_train"]) + int(p["rows_test"]) == sum(
        store.read_manifest(SNAP, pk, scenario.versions_a[pk]).row_count for pk in DAYS)
    assert set(run.data.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    spec_doc = tracking.load_json(scenario.run_a, "model_spec.json")
    assert spec_doc["name"] == "churn"
    assert ModelSpec.model_validate(spec_doc["spec"]) == load_catalog().models["churn"]
    artifacts = {a.path for a in client.list_artifacts(scenario.run_a)} | {
        a.path for a in client.list_artifacts(scenario.run_a, "plots")}
    assert {"snapshot_lock.json", "model_spec.json", "estimator_params.json", "feature_importances.json",
            "training_summary.json", "plots/confusion_matrix.png", "plots/feature_importances.png"} <= artifacts
    importances = tracking.load_json(scenario.run_a, "feature_importances.json")["importances"]
    assert set(importances) == {"total_purchases", "tenure_days", "avg_order_value"}

    # the registered model version, its signature and input example
    (mv,) = [v for v in client.search_model_versions("name='churn'") if v.run_id == scenario.run_a]
    assert mv.tags["snapshot_platform.snapshots"].startswith(f"{SNAP}/{DAYS[0]}@{scenario.versions_a[DAYS[0]]}")
    import mlflow

    info = mlflow.models.get_model_info(f"models:/churn/{mv.version}")
    assert [c.name for c in info.signature.inputs.inputs] == ["total_purchases", "tenure_days", "avg_order_value"]
    assert info.saved_input_example_info is not None


def test_the_logged_model_loads_and_predicts(scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import pandas as pd

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # MLflow gates every format behind it
    with scenario.tracking().active():
        model = mlflow.sklearn.load_model("models:/churn/1")
    X = pd.DataFrame({"total_purchases": [0.0, 40.0], "tenure_days": [40.0, 400.0], "avg_order_value": [10.0, 10.0]})
    assert list(model.predict(X)) in ([0, 0], [0, 1], [1, 0], [1, 1])


# ---------------------------------------------------------------- reproduce


def test_reproduce_after_the_source_changed(scenario: Scenario) -> None:
    """The real command, in a subprocess: newer versions exist and the database moved on."""
    proc = subprocess.run([str(BIN / "snapshot-platform"), "reproduce", scenario.run_a, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["identical"] and report["predictions"]["identical"] and report["code_version"]["same"]
    assert [(s["partition"], s["version"]) for s in report["snapshots"]] == list(scenario.versions_a.items())
    recorded = scenario.tracking().client().get_run(scenario.run_a).data.metrics
    assert {k: m["reproduced"] for k, m in report["metrics"].items()} == recorded
    assert all(m["identical"] for m in report["metrics"].values())
    # text output for people
    res = cli("reproduce", scenario.run_b)
    assert res.exit_code == 0 and "REPRODUCED: identical metrics and predictions" in res.stdout


def test_reproduce_fails_when_the_data_is_corrupt_or_gone(scenario: Scenario, tmp_path: Path) -> None:
    copy = tmp_path / "storage"
    shutil.copytree(scenario.storage, copy)
    store = SnapshotStore(copy)
    m = store.read_manifest(SNAP, DAYS[1], scenario.versions_a[DAYS[1]])
    part = Path(str(store.part_path(m, m.files[0])))
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    part.write_bytes(bytes(raw))
    res = cli("--storage", str(copy), "reproduce", scenario.run_a)
    assert res.exit_code == 2
    assert f"cannot reproduce run {scenario.run_a}" in res.stderr and "the snapshot is corrupt" in res.stderr
    assert part.name in res.stderr
    res = cli("--storage", str(copy), "reproduce", scenario.run_a, "--json")
    assert res.exit_code == 2 and json.loads(res.stdout)["identical"] is False
    # run B's versions are intact in the copy
    assert cli("--storage", str(copy), "reproduce", scenario.run_b).exit_code == 0

    shutil.rmtree(Path(str(store.version_dir(SNAP, DAYS[1], m.version))))
    res = cli("--storage", str(copy), "reproduce", scenario.run_a)
    assert res.exit_code == 2 and f"{SNAP}/{DAYS[1]} version {m.version}" in res.stderr
    assert "the run used the storage" in res.stderr and "--storage" in res.stderr

    res = cli("reproduce", "0" * 32)
    assert res.exit_code == 2 and "no MLflow run" in res.stderr


# ---------------------------------------------------------------- compare


def test_compare_knows_what_changed_in_the_data(scenario: Scenario) -> None:
    res = cli("compare", scenario.run_a, scenario.run_b, "--json", "--batch-rows", "64")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    for name, m in out["metrics"].items():
        assert m["delta"] == pytest.approx(m["b"] - m["a"])
    data = {d["partition"]: d for d in out["data"]}
    assert sorted(data) == DAYS
    expect = {DAYS[0]: (3, 0, 0), DAYS[1]: (0, 0, 5), DAYS[2]: (0, 2, 0)}
    for pk, (added, removed, changed) in expect.items():
        d = data[pk]
        assert (d["asset"], d["version_a"], d["version_b"]) == (SNAP, scenario.versions_a[pk], scenario.versions_b[pk])
        assert (d["rows_added"], d["rows_removed"], d["rows_changed"]) == (added, removed, changed), pk
        assert d["schema_changes"] == []
    assert data[DAYS[1]]["changed_by_column"] == {"total_purchases": 5}
    shift = data[DAYS[1]]["columns"]["total_purchases"]["shift"]["mean"]
    assert shift == pytest.approx(15 / data[DAYS[1]]["rows_a"])
    assert out["spec_changes"] == [] and out["code_version"]["same"]
    assert out["verdict"]["cause"] == "data"

    res = cli("compare", scenario.run_a, scenario.run_b)
    assert res.exit_code == 0
    assert "added 3, removed 0, changed 0" in res.stdout and "added 0, removed 2, changed 0" in res.stdout
    assert "verdict: Only the data changed" in res.stdout

    same = json.loads(cli("compare", scenario.run_a, scenario.run_a, "--json").stdout)
    assert same["verdict"]["cause"] == "nothing" and all(d["same_version"] for d in same["data"])


# ---------------------------------------------------------------- pinned versions, history, tampered metrics


def test_pinned_versions_and_a_run_whose_metrics_do_not_reproduce(scenario: Scenario) -> None:
    old = scenario.versions_a[DAYS[1]]
    res = scenario.fit(CHURN_KEY, DAYS[-1], config={"pinned_versions": {DAYS[1]: old}})
    md = metadata(res)
    assert md["snapshot/versions"] == {DAYS[0]: scenario.versions_b[DAYS[0]], DAYS[1]: old,
                                       DAYS[2]: scenario.versions_b[DAYS[2]]}
    assert md["snapshot/version_sources"][DAYS[1]] == "pinned"
    assert md["snapshot/version_sources"][DAYS[0]] == "dagster"
    run_c = md["mlflow/run_id"]
    assert [e.version for e in scenario.tracking().load_lock(run_c).snapshots] == list(
        md["snapshot/versions"].values())

    # a recorded metric that the data cannot give again: exit 1, naming it
    scenario.tracking().client().log_metric(run_c, "accuracy", 0.123)
    res = cli("reproduce", run_c)
    assert res.exit_code == 1 and "NOT REPRODUCED: accuracy differ" in res.stderr
    assert json.loads(cli("reproduce", run_c, "--json").stdout)["metrics"]["accuracy"]["identical"] is False

    # pinning a partition the run does not train on, and a model partition without enough history
    res = scenario.fit(CHURN_KEY, DAYS[-1], config={"pinned_versions": {"2024-01-05": old}}, raise_on_error=False)
    assert not res.success
    res = scenario.fit(CHURN_KEY, DAYS[1], raise_on_error=False)
    assert not res.success
    (failure,) = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "only 2 exist" in str(failure.event_specific_data.error)


def test_a_regressor_reports_mae_rmse_r2_and_reproduces(scenario: Scenario) -> None:
    md = metadata(scenario.fit(AOV_KEY, DAYS[-1]))
    assert {k for k in md if k.startswith("metric/")} == {"metric/mae", "metric/rmse", "metric/r2"}
    run_id = md["mlflow/run_id"]
    client = scenario.tracking().client()
    run = client.get_run(run_id)
    assert run.data.params["snapshot_partitions"] == ",".join(DAYS[1:])
    assert run.data.params["estimator.random_state"] == "0"
    assert "residuals.png" in {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    assert md["mlflow/registered_model"] == "aov version 1"
    res = cli("reproduce", run_id, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["identical"]


# ---------------------------------------------------------------- the gate's override, logged


def test_an_override_reason_is_logged_and_reused_by_reproduce(tmp_path: Path) -> None:
    import pyarrow as pa

    store = SnapshotStore(tmp_path / "storage")
    rows = [{"id": i, "x": float(i % 17), "y": int(i % 17 > 8)} for i in range(300)]
    table = pa.Table.from_pylist(rows)
    fields = {"window": {"start": "s", "end": "e"}, "query": "q", "query_sha256": "0" * 64, "params": {},
              "key": ["id"], "source": {"kind": "test"}, "source_state": {}, "dagster_run_id": None,
              "code_version": "t", "library_versions": {},
              "checks": {"labels": {"passed": False, "blocking": True, "severity": "ERROR", "details": {}}}}
    m = store.publish("events", "2024-01-01", table.schema, table.to_batches(), fields).manifest
    spec = ModelSpec.model_validate({"snapshot": "events", "features": ["x"], "target": "y",
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression"}})
    result = train("events_model", spec, [m], store, override_reason="known bad labels, accepted by the owner")
    tracking = MlflowTracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = tracking.log_training(result, store, model_partition="2024-01-01")
    run = tracking.get_run(logged.run_id)
    assert run.data.tags[TAG_OVERRIDE] == "known bad labels, accepted by the owner"
    assert run.data.params["allow_failed_checks_reason"] == "known bad labels, accepted by the owner"
    lock = tracking.load_lock(logged.run_id)
    assert lock.snapshots[0].checks_overridden == ("labels",)
    report = reproduce_run(logged.run_id, tracking, store)  # the run's own reason lets it through again
    assert report.identical and report.allow_failed_checks_reason
