"""Promotion: move a registered-model alias (``champion``) to a run's model version, only when it is
at least as good as the alias's current holder on the same data.

The same pinned evaluation data: the **challenger's** ``snapshot_lock.json``: its versions are
loaded hash-verified and checked against the lock, the challenger's own split (a stable hash of the
key, ``split.py``) picks the test rows, and both models predict those rows. Because the split keeps
a row on its side in every version, a holder trained with the same split settings never trained on
any of these rows either, even when its training window differs (the report says when the split
settings differ). The primary metric is computed by the training code's evaluation for both.

The alias moves only when the challenger's figure is at least as good (>= for a higher-is-better
metric, <= for MAE/RMSE); the first promotion of an alias nobody holds succeeds. ``force`` moves it
anyway and records the reason as a model-version tag. Every promotion records the two figures and
the evaluation lock as model-version tags, and the version's description carries the lock's summary
(assets, partitions, versions, row counts) and the Dagster run.

Models are loaded with skops, trusting only what scikit-learn, NumPy and SciPy define (our allow-list,
computed from the file, not the list the model carries); a model saved with cloudpickle is loaded
only when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`` says the registry is trusted.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snapshot_platform.catalog import ModelSpec
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training import split as split_mod
from snapshot_platform.training.estimator import make_estimator, task_of
from snapshot_platform.training.lock import SnapshotLock
from snapshot_platform.training.mlflow_logging import MODEL_SPEC_NAME, MlflowTracking
from snapshot_platform.training.mlflow_model import TRUSTED_MODULES
from snapshot_platform.training.model_versions import TAG_DAGSTER_RUN, describe_version
from snapshot_platform.training.train import PARTITION_COLUMN, _evaluate, key_of, load_frame

HIGHER_IS_BETTER = ("roc_auc", "accuracy", "precision", "recall", "f1", "r2")
LOWER_IS_BETTER = ("mae", "rmse")
METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER
DEFAULT_METRIC = {"classification": "roc_auc", "regression": "r2"}

TAG_PROMOTED = "snapshot_platform.promotion"  # JSON: alias, metric, both figures, the evaluation lock
TAG_FORCE_REASON = "snapshot_platform.promotion.force_reason"


class CannotPromote(RuntimeError):
    """The comparison cannot be made (no such run or model version, another target, an unknown metric)."""


@dataclass
class PromotionReport:
    promoted: bool
    model: str
    alias: str
    version: str
    run_id: str
    metric: str
    challenger: float | None = None
    holder: float | None = None
    holder_version: str | None = None
    holder_run_id: str | None = None
    forced_reason: str | None = None
    evaluated_on: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def better_or_equal(metric: str, challenger: float, holder: float) -> bool:
    return challenger <= holder if metric in LOWER_IS_BETTER else challenger >= holder


def _run_version(client: Any, name: str, run_id: str) -> Any:
    found = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
    if not found:
        raise CannotPromote(f"run {run_id} registered no version of model {name!r}")
    return max(found, key=lambda v: int(v.version))


def _holder(client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
            return None
        raise


def load_version_model(tracking: MlflowTracking, name: str, version: str) -> Any:
    """A registered version's estimator: skops with our allow-list, cloudpickle only when allowed."""
    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tracking.active() as mlflow, tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
        path = local / flavor["pickled_model"]
        if flavor.get("serialization_format") == "skops":
            import skops.io as sio

            types = sio.get_untrusted_types(file=path)
            foreign = [t for t in types if t.split(".")[0] not in TRUSTED_MODULES]
            if foreign:
                raise CannotPromote(f"model {name} version {version} holds types outside scikit-learn/NumPy/SciPy: "
                                    f"{', '.join(foreign)}; not loaded")
            return sio.load(path, trusted=types)
        if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "").lower() != "true":
            raise CannotPromote(f"model {name} version {version} was saved with cloudpickle; loading it runs code "
                                "from the artifact: set MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true if the registry "
                                "is trusted")
        return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def _spec_of(tracking: MlflowTracking, run_id: str) -> tuple[str, ModelSpec]:
    doc = tracking.load_json(run_id, MODEL_SPEC_NAME)
    return doc["name"], ModelSpec.model_validate(doc["spec"])


def evaluation_rows(store: SnapshotStore, lock: SnapshotLock, spec: ModelSpec, features: list[str],
                    task: str) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """The rows of the lock's versions on the test side of ``spec``'s split (hash-verified, as trained)."""
    from snapshot_platform.training.reproduce import locked_manifests

    manifests = locked_manifests(store, lock)
    key = key_of(manifests, next((list(e.key) for e in lock.snapshots if e.key), None))
    by = list(spec.split.by or key)
    wide = spec.model_copy(update={"features": features})
    frame = load_frame(store, manifests, list(dict.fromkeys([*key, *by, *features, spec.target])), wide, task)
    frame = frame[~frame[spec.target].isna().to_numpy()]
    frame = frame.sort_values([*key, PARTITION_COLUMN], kind="mergesort", ignore_index=True)
    mask = split_mod.test_mask(frame, by, spec.split.test_fraction)
    where = {"lock_of_run": None, "snapshots": [f"{e.asset}/{e.partition}@{e.version}" for e in lock.snapshots],
             "rows": int(mask.sum()), "split": {"by": by, "test_fraction": spec.split.test_fraction}}
    return frame, mask, where


def promote_run(run_id: str, alias: str, tracking: MlflowTracking, store: SnapshotStore, *,
                metric: str | None = None, primary_metric: str | None = None,
                force_reason: str | None = None) -> PromotionReport:
    """Give ``alias`` to ``run_id``'s model version if it is at least as good as the holder (see above).

    ``metric`` (asked for) wins over ``primary_metric`` (the catalog's), then the logged spec's, then
    roc_auc / r2 by task.
    """
    from mlflow.exceptions import MlflowException

    tracking.get_run(run_id)  # RunNotFound when there is no such run
    name, spec = _spec_of(tracking, run_id)
    task = task_of(make_estimator(spec.estimator.class_path, dict(spec.estimator.params)))
    metric = metric or primary_metric or spec.primary_metric or DEFAULT_METRIC[task]
    if metric not in METRICS:
        raise CannotPromote(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    client = tracking.client()
    try:
        challenger_v = _run_version(client, name, run_id)
        holder_v = _holder(client, name, alias)
    except MlflowException as exc:
        raise CannotPromote(f"model {name}: {exc.message}") from None
    run = tracking.get_run(run_id)
    lock = tracking.load_lock(run_id)
    report = PromotionReport(promoted=False, model=name, alias=alias, version=str(challenger_v.version),
                             run_id=run_id, metric=metric, forced_reason=force_reason)
    if holder_v is not None and str(holder_v.version) == str(challenger_v.version):
        report.promoted, report.holder_version = True, str(holder_v.version)
        report.message = f"{name}@{alias} is already version {holder_v.version}"
        return report
    if holder_v is not None:
        report.holder_version, report.holder_run_id = str(holder_v.version), holder_v.run_id
        try:
            _compare(report, tracking, store, lock, spec, task, holder_v)
        except CannotPromote as exc:
            if force_reason is None:
                raise
            report.notes.append(f"not compared: {exc}")
    ok = holder_v is None or (report.challenger is not None and report.holder is not None
                              and better_or_equal(metric, report.challenger, report.holder))
    if not ok and force_reason is None:
        report.message = (f"refused: {name} version {report.version} (run {run_id}) has {metric} "
                          f"{report.challenger:.6g}, the holder of @{alias}, version {report.holder_version}, has "
                          f"{report.holder:.6g} on the same data ({report.evaluated_on['rows']} test rows of the "
                          f"challenger's lock)")
        return report
    dagster_run = run.data.tags.get(TAG_DAGSTER_RUN)
    describe_version(client, name, report.version, lock, dagster_run)
    record = {"alias": alias, "metric": metric, "challenger": report.challenger, "holder": report.holder,
              "holder_version": report.holder_version, "evaluated_on": report.evaluated_on}
    client.set_model_version_tag(name, report.version, TAG_PROMOTED, json.dumps(record, default=str)[:5000])
    if force_reason is not None:
        client.set_model_version_tag(name, report.version, TAG_FORCE_REASON, force_reason[:5000])
    client.set_registered_model_alias(name, alias, report.version)
    report.promoted = True
    if holder_v is None:
        report.message = f"{name}@{alias} -> version {report.version}: the first holder of the alias"
    elif ok:
        report.message = (f"{name}@{alias} -> version {report.version}: {metric} {report.challenger:.6g} >= holder "
                          f"version {report.holder_version}'s {report.holder:.6g} on the same data"
                          if metric in HIGHER_IS_BETTER else
                          f"{name}@{alias} -> version {report.version}: {metric} {report.challenger:.6g} <= holder "
                          f"version {report.holder_version}'s {report.holder:.6g} on the same data")
    else:
        report.message = f"{name}@{alias} -> version {report.version}, forced: {force_reason}"
    return report


def _compare(report: PromotionReport, tracking: MlflowTracking, store: SnapshotStore, lock: SnapshotLock,
             spec: ModelSpec, task: str, holder_v: Any) -> None:
    """Score both models on the challenger's lock's test rows; fill the report's figures."""
    from snapshot_platform.store import IntegrityError
    from snapshot_platform.training.reproduce import CannotReproduce

    _, holder_spec = _spec_of(tracking, holder_v.run_id)
    if holder_spec.target != spec.target:
        raise CannotPromote(f"the holder predicts {holder_spec.target!r}, the challenger {spec.target!r}")
    if holder_spec.split != spec.split:
        report.notes.append("the holder was trained with other split settings: some evaluation rows may have "
                            "been among its training rows")
    features = list(dict.fromkeys([*spec.features, *holder_spec.features]))
    try:
        frame, mask, where = evaluation_rows(store, lock, spec, features, task)
    except (CannotReproduce, IntegrityError) as exc:
        raise CannotPromote(f"the evaluation data cannot be had: {exc}") from None
    where["lock_of_run"] = report.run_id
    report.evaluated_on = where
    y = frame[spec.target][mask]
    for side, version, feats in (("challenger", report.version, spec.features),
                                 ("holder", str(holder_v.version), holder_spec.features)):
        model = load_version_model(tracking, report.model, version)
        notes: list[str] = []
        metrics, _, _ = _evaluate(model, task, frame.loc[mask, list(feats)], y, notes)
        if report.metric not in metrics:
            raise CannotPromote(f"{side} (version {version}) has no {report.metric}: {'; '.join(notes)}")
        setattr(report, side, metrics[report.metric])
