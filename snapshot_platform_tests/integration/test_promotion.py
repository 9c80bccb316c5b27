"""`snapshot-platform promote`: an alias moves only to a model at least as good on the same data.

Real MLflow (a SQLite tracking store in tmp_path) and a real store; three runs of one registered
model: a weak one on partitions 1-2, a strong one on 2-3, a weak one on 2-3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from snapshot_platform.catalog import ModelSpec
from snapshot_platform.cli import main
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training import split as split_mod
from snapshot_platform.training.mlflow_logging import MlflowTracking
from snapshot_platform.training.promote import TAG_FORCE_REASON, TAG_PROMOTED, promote_run
from snapshot_platform.training.train import train

PARTS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def _publish(store: SnapshotStore, partition: str, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    n = 400
    signal = rng.normal(0, 1, n)
    rows = {"id": list(range(seed * 1000, seed * 1000 + n)), "signal": signal.tolist(),
            "noise": rng.normal(0, 1, n).tolist(),
            "y": (signal + rng.normal(0, 0.5, n) > 0).astype(int).tolist()}
    table = pa.table(rows)
    fields = {"window": {"start": partition, "end": partition}, "query": "q", "query_sha256": "0" * 64, "params": {},
              "key": ["id"], "source": {"kind": "test"}, "source_state": {}, "dagster_run_id": None,
              "code_version": "t", "library_versions": {}}
    return store.publish("events", partition, table.schema, table.to_batches(), fields).manifest


def _spec(feature: str) -> ModelSpec:
    return ModelSpec.model_validate({"snapshot": "events", "features": [feature], "target": "y",
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression"}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("promote")
    store = SnapshotStore(tmp / "storage")
    m = {p: _publish(store, p, i + 1) for i, p in enumerate(PARTS)}
    tracking = MlflowTracking(f"sqlite:///{tmp / 'mlflow.db'}")
    out: dict[str, Any] = {"store": store, "tracking": tracking, "manifests": m, "tmp": tmp}
    for label, feature, parts in (("weak_early", "noise", PARTS[:2]), ("strong", "signal", PARTS[1:]),
                                  ("weak", "noise", PARTS[1:])):
        result = train("churn", _spec(feature), [m[p] for p in parts], store)
        logged = tracking.log_training(result, store, model_partition=parts[-1],
                                       extra_tags={"dagster.run_id": f"dagster-{label}"})
        out[label] = logged
        out[f"{label}_result"] = result
    return out


def _cli(runs: dict[str, Any], *args: str) -> Any:
    return CliRunner().invoke(main, ["--storage", str(runs["store"].root), "promote", *args,
                                     "--tracking-uri", runs["tracking"].tracking_uri],
                              env={"SNAPSHOT_PLATFORM_CATALOG": str(runs["tmp"] / "absent.yaml")})


def _alias(runs: dict[str, Any]) -> str:
    return str(runs["tracking"].client().get_model_version_by_alias("churn", "champion").version)


def test_promotion_is_gated_on_the_same_data(runs: dict[str, Any]) -> None:
    tracking, store = runs["tracking"], runs["store"]
    # the first promotion of an alias nobody holds succeeds
    first = promote_run(runs["weak_early"].run_id, "champion", tracking, store)
    assert first.promoted and first.holder_version is None and _alias(runs) == "1"

    # a better challenger gets the alias; both scored on the challenger's lock's test rows
    better = promote_run(runs["strong"].run_id, "champion", tracking, store)
    assert better.promoted and better.metric == "roc_auc" and _alias(runs) == "2"
    assert better.evaluated_on["lock_of_run"] == runs["strong"].run_id
    assert better.evaluated_on["snapshots"] == [f"events/{p}@{runs['manifests'][p].version}" for p in PARTS[1:]]
    # independent figures: the rows of partitions 2-3 on the test side, scored by each model's estimator
    frame = pa.concat_tables([store.read_table("events", p, runs["manifests"][p].version) for p in PARTS[1:]]
                             ).to_pandas().sort_values("id", ignore_index=True)
    test = frame[split_mod.test_mask(frame, ["id"], 0.2)]
    assert better.evaluated_on["rows"] == len(test)
    holder_est, challenger_est = runs["weak_early_result"].estimator, runs["strong_result"].estimator
    expect_holder = roc_auc_score(test["y"], holder_est.predict_proba(test[["noise"]])[:, 1])
    expect_challenger = roc_auc_score(test["y"], challenger_est.predict_proba(test[["signal"]])[:, 1])
    assert better.holder == pytest.approx(expect_holder, abs=1e-12)
    assert better.challenger == pytest.approx(expect_challenger, abs=1e-12)
    # the holder trained on another window: its recorded figure was on other rows, not these
    assert better.holder != pytest.approx(runs["weak_early_result"].metrics["roc_auc"], abs=1e-9)

    # a worse one is refused with both numbers (exit 1), and the alias stays
    res = _cli(runs, runs["weak"].run_id, "--alias", "champion")
    assert res.exit_code == 1, res.output
    assert _alias(runs) == "2"
    res_json = _cli(runs, runs["weak"].run_id, "--alias", "champion", "--json")
    report = json.loads(res_json.stdout)
    assert report["promoted"] is False and report["holder"] > report["challenger"]
    assert f"{report['challenger']:.6g}" in res.output and f"{report['holder']:.6g}" in res.output

    # --force records its reason as a model-version tag
    res = _cli(runs, runs["weak"].run_id, "--alias", "champion", "--force", "rollback drill, owner approved")
    assert res.exit_code == 0, res.output
    assert _alias(runs) == "3"
    mv = tracking.client().get_model_version("churn", "3")
    assert mv.tags[TAG_FORCE_REASON] == "rollback drill, owner approved"
    assert json.loads(mv.tags[TAG_PROMOTED])["holder_version"] == "2"


def test_the_model_version_carries_the_lock_summary_and_the_dagster_run(runs: dict[str, Any]) -> None:
    mv = runs["tracking"].client().get_model_version("churn", "2")
    for p in PARTS[1:]:
        m = runs["manifests"][p]
        assert f"events/{p} version {m.version}: {m.row_count} rows" in mv.description
    assert "dagster-strong" in mv.description and mv.tags["dagster.run_id"] == "dagster-strong"
    assert mv.tags["snapshot_platform.lock.partitions"] == ",".join(PARTS[1:])


def test_an_unknown_metric_or_run_is_a_usage_error(runs: dict[str, Any]) -> None:
    assert _cli(runs, runs["weak"].run_id, "--alias", "champion", "--metric", "lift").exit_code == 2
    assert _cli(runs, "0" * 32, "--alias", "champion").exit_code == 2
