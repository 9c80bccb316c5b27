"""A catalog model's ``promote: {alias: champion}``: the model asset promotes after training, through the
same gate as ``snapshot-platform promote`` (training/promote.py), and records the outcome in the
``mlflow/promotion`` metadata; a refusal is logged, not a failed run.

Real Dagster (``materialize``), a real MLflow SQLite store and the SQLite demo source in tmp_path. One
snapshot version of 2024-01-01; three trainings on it, all registered as ``churn`` except the last:

1. a logistic regression on the two informative features, ``promote: {alias: champion}``: promoted;
2. a depth-1 tree on the least informative feature, same catalog entry otherwise: refused, alias stays;
3. a model ``plain`` without ``promote``: trained, no alias, no promotion metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from mlflow.exceptions import MlflowException

from snapshot_platform.catalog import load_catalog
from snapshot_platform.demo import source_db
from snapshot_platform.orchestration.definitions import build_assets, build_resources
from snapshot_platform.training.mlflow_logging import MlflowTracking

SNAP = "customer_data"
DAY = "2024-01-01"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
STRONG = {"features": ["total_purchases", "tenure_days"],
          "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}}
WEAK = {"features": ["avg_order_value"],
        "estimator": {"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1}}}


def catalog(db: Path, churn: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": {"demo_db": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {SNAP: {
            "source": "demo_db",
            "query": ("SELECT customer_id, total_purchases, avg_order_value, tenure_days, churn_label "
                      "FROM customers "
                      "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)"),
            "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"},
            "key": ["customer_id"],
        }},
        "models": {
            "churn": {"snapshot": SNAP, "partitions": 1, "target": "churn_label",
                      "split": {"test_fraction": 0.3, "by": "customer_id"},
                      "promote": {"alias": "champion"}, **churn},
            "plain": {"snapshot": SNAP, "partitions": 1, "target": "churn_label", **STRONG},
        },
    }


@dataclass
class Runs:
    tracking: MlflowTracking
    strong: dict[str, Any]  # the materialization metadata of each training
    weak: dict[str, Any]
    plain: dict[str, Any]
    weak_success: bool


def _metadata(result: Any, key: AssetKey) -> dict[str, Any]:
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in ev.event_specific_data.materialization.metadata.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("auto_promotion")
    mp = pytest.MonkeyPatch()
    try:
        for p in ("home", "storage", "dagster_home"):
            (root / p).mkdir()
        (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        for k, v in {"SNAPSHOT_PLATFORM_HOME": str(root / "home"),
                     "SNAPSHOT_PLATFORM_STORAGE_URL": str(root / "storage"),
                     "DAGSTER_HOME": str(root / "dagster_home"), "MLFLOW_TRACKING_URI": tracking_uri,
                     "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
            mp.setenv(k, v)
        mp.delenv("SNAPSHOT_PLATFORM_MLFLOW_UI_URL", raising=False)
        db = root / "source.sqlite"
        source_db.create(db)
        instance = DagsterInstance.get()
        resources = build_resources()

        def run(churn: dict[str, Any], keys: list[AssetKey], name: str) -> Any:
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(catalog(db, churn), sort_keys=False))
            return materialize(build_assets(load_catalog(path)), selection=keys, partition_key=DAY,
                               instance=instance, resources=resources, run_config=QUIET, raise_on_error=False)

        churn, plain = AssetKey(["models", "churn"]), AssetKey(["models", "plain"])
        first = run(STRONG, [AssetKey(["snapshots", SNAP]), churn, plain], "strong")
        assert first.success
        weak = run(WEAK, [churn], "weak")  # the same snapshot version, resolved from the instance
        yield Runs(MlflowTracking(tracking_uri), _metadata(first, churn), _metadata(weak, churn),
                   _metadata(first, plain), weak.success)
    finally:
        mp.undo()


def _alias_version(tracking: MlflowTracking, model: str) -> str:
    return str(tracking.client().get_model_version_by_alias(model, "champion").version)


def _version_of(tracking: MlflowTracking, model: str, run_id: str) -> str:
    (mv,) = [v for v in tracking.client().search_model_versions(f"name = '{model}'") if v.run_id == run_id]
    return str(mv.version)


def test_the_first_training_takes_the_alias(runs: Runs) -> None:
    version = _version_of(runs.tracking, "churn", runs.strong["mlflow/run"])
    assert _alias_version(runs.tracking, "churn") == version
    expected = f"churn@champion -> version {version}: the first holder of the alias"
    assert runs.strong["mlflow/promotion"] == expected


def test_a_worse_model_is_refused_and_the_run_succeeds(runs: Runs) -> None:
    tracking = runs.tracking
    strong_run, weak_run = (tracking.client().get_run(r["mlflow/run"]) for r in (runs.strong, runs.weak))
    weak_version = _version_of(tracking, "churn", weak_run.info.run_id)
    assert runs.weak_success  # a refusal is not a failed run: the model is trained and registered
    assert weak_version != _version_of(tracking, "churn", strong_run.info.run_id)
    assert _alias_version(tracking, "churn") == _version_of(tracking, "churn", strong_run.info.run_id)
    # both trained on the same snapshot version with the same split: each figure the gate computed on the
    # challenger's test rows is the one its own run logged
    challenger, holder = weak_run.data.metrics["roc_auc"], strong_run.data.metrics["roc_auc"]
    assert challenger < holder
    message = runs.weak["mlflow/promotion"]
    head = f"refused: churn version {weak_version} (run {weak_run.info.run_id}) has roc_auc "
    assert message.startswith(head), message
    assert f"roc_auc {challenger:.6g}, the holder of @champion" in message, message
    assert f"has {holder:.6g} on the same data" in message, message


def test_a_model_without_promote_sets_no_alias(runs: Runs) -> None:
    assert runs.plain["mlflow/registered_model"] == "plain version 1"
    assert "mlflow/promotion" not in runs.plain
    assert runs.tracking.client().get_registered_model("plain").aliases == {}
    with pytest.raises(MlflowException):
        runs.tracking.client().get_model_version_by_alias("plain", "champion")
