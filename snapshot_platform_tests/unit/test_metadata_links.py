"""What Dagster shows of a snapshot and a model (issue 14 §2): the manifest as a path, created_at as a
timestamp, the files as a table, a table of every partition's version, and the MLflow run, tracking
server and registered model version as links when there is an MLflow UI. No servers: a SQLite source."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import MetadataValue

from snapshot_platform.catalog import load_catalog
from snapshot_platform.orchestration.metadata import MLFLOW_UI_ENV, snapshot_metadata, training_metadata
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training.mlflow_logging import LoggedRun
from snapshot_platform_tests.capture_runs import DEMO_QUERY, demo_catalog, take_snapshot

@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("metadata")
    path = demo_catalog(base, {"customer_data": {
        "source": "demo_db", "query": DEMO_QUERY, "key": ["customer_id"],
        "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"}}})
    catalog, store = load_catalog(path), SnapshotStore(base / "storage")
    return store, [take_snapshot(catalog, "customer_data", day, store) for day in ("2024-01-01", "2024-01-02")]


def test_snapshot_metadata_has_typed_entries_and_the_partition_versions(outcomes):
    store, (first, second) = outcomes
    md = snapshot_metadata(second, store)
    m = second.result.manifest
    assert isinstance(md["snapshot/manifest"], type(MetadataValue.path("x")))
    assert Path(md["snapshot/manifest"].path) == Path(second.result.uri.removeprefix("file://")) / "manifest.json"
    assert Path(md["snapshot/manifest"].path).is_file()
    assert isinstance(md["snapshot/created_at"], type(MetadataValue.timestamp(0.0)))
    assert md["snapshot/created_at"].value == dt.datetime.fromisoformat(m.created_at).timestamp()
    files = md["snapshot/files"]
    assert [c.name for c in files.schema.columns] == ["path", "rows", "bytes", "sha256"]
    assert [r.data for r in files.records] == [
        {"path": f.path, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in m.files]
    table = md["snapshot/partitions"]
    assert [(r.data["partition"], r.data["version"], r.data["rows"]) for r in table.records] == [
        ("2024-01-01", first.result.version, first.result.manifest.row_count),
        ("2024-01-02", second.result.version, m.row_count)]
    assert md["snapshot/version"] == m.version  # the versions module reads this text back


def logged(tracking_uri: str) -> LoggedRun:
    return LoggedRun(run_id="0123abcd", experiment_id="7", tracking_uri=tracking_uri, artifact_uri="x",
                     model_uri="runs:/0123abcd/model", registered_model_name="churn model",
                     registered_model_version="3", model_format="skops")


class _Result:
    """The few fields of a TrainResult that training_metadata reads."""

    def __init__(self) -> None:
        import numpy as np

        self.test_mask = np.array([True, False, False])
        self.code_version = "c0de"
        self.seconds = {"total": 1.5}
        self.metrics = {"accuracy": 0.5}


@pytest.mark.parametrize("tracking_uri, ui_env, ui", [
    ("http://mlflow.internal:5000/", None, "http://mlflow.internal:5000"),
    ("sqlite:///tmp/mlflow.db", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_mlflow_entries_are_links_to_the_ui(monkeypatch, tracking_uri, ui_env, ui):
    if ui_env:
        monkeypatch.setenv(MLFLOW_UI_ENV, ui_env)
    else:
        monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
    md = training_metadata("churn model", _Result(), logged(tracking_uri), {}, {})
    assert md["mlflow/run_id"] == MetadataValue.url(f"{ui}/#/experiments/7/runs/0123abcd")
    assert md["mlflow/tracking_uri"] == MetadataValue.url(ui)
    assert md["mlflow/registered_model"] == MetadataValue.url(f"{ui}/#/models/churn%20model/versions/3")
    assert md["mlflow/run"] == "0123abcd"


def test_without_an_mlflow_ui_the_entries_stay_text(monkeypatch):
    monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
    md = training_metadata("churn", _Result(), logged("sqlite:///tmp/mlflow.db"), {}, {})
    assert md["mlflow/run_id"] == "0123abcd" and md["mlflow/registered_model"] == "churn version 3"
