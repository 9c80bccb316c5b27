"""Reproduce a training run from its run id alone: same versions, same spec, same seed → same metrics.

What the run logged is all that is needed: ``snapshot_lock.json`` (versions and file hashes),
``model_spec.json`` (the catalog entry as it was), ``estimator_params.json`` (the seed it set). The
versions are loaded hash-verified and checked against the lock; the training gate applies again
(with the override reason the run recorded, if any); the retrained model's metrics and the digest of
its test predictions must equal the recorded ones exactly.
"""

from __future__ import annotations

import math

from pydantic import ValidationError

from snapshot_platform.catalog import ModelSpec
from snapshot_platform.gate import UntrainableSnapshot
from snapshot_platform.store import IntegrityError, Manifest, ManifestError, SnapshotNotFound, SnapshotStore
from snapshot_platform.training.lock import SnapshotLock
from snapshot_platform.training.mlflow_logging import (
    ESTIMATOR_PARAMS_NAME,
    MODEL_SPEC_NAME,
    SUMMARY_NAME,
    TAG_PREDICTIONS,
    MlflowTracking,
)
from snapshot_platform.training.reports import (
    CodeCheck,
    LibraryDifference,
    Reproduced,
    ReproducedSnapshot,
    ReproduceReport,
)
from snapshot_platform.training.train import TrainingError, library_versions, train


class CannotReproduce(RuntimeError):
    """The run's data or spec cannot be had again (missing, corrupt, untrainable, not our run)."""


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def locked_manifests(store: SnapshotStore, lock: SnapshotLock) -> list[Manifest]:
    """The lock's versions from ``store``, each checked against the lock."""
    manifests, missing = [], []
    for e in lock.snapshots:
        try:
            manifests.append(store.read_manifest(e.asset, e.partition, e.version))
        except SnapshotNotFound:
            missing.append(e.where)
        except ManifestError as exc:
            raise CannotReproduce(str(exc)) from None
    if missing:
        hint = ""
        recorded = lock.storage_url
        if recorded and recorded != store.uri(store.root):
            hint = f"; the run used the storage {recorded} (pass --storage)"
        raise CannotReproduce(f"not in {store}: {', '.join(missing)}{hint}")
    problems = [p for e, m in zip(lock.snapshots, manifests) for p in e.mismatches(m)]
    if problems:
        raise CannotReproduce("the stored versions do not match the lock:\n  " + "\n  ".join(problems))
    return manifests


def reproduce_run(
    run_id: str,
    tracking: MlflowTracking,
    store: SnapshotStore,
    override_reason: str | None = None,
) -> ReproduceReport:
    run = tracking.get_run(run_id)
    lock = tracking.load_lock(run_id)
    spec_doc = tracking.load_json(run_id, MODEL_SPEC_NAME)
    est_doc = tracking.load_json(run_id, ESTIMATOR_PARAMS_NAME)
    try:
        summary = tracking.load_json(run_id, SUMMARY_NAME)
    except LookupError:
        summary = {}
    name = spec_doc["name"]
    try:
        spec = ModelSpec.model_validate(spec_doc["spec"])
    except ValidationError as exc:
        raise CannotReproduce(f"run {run_id}: the logged model spec is no longer valid here: {exc}") from None

    manifests = locked_manifests(store, lock)
    reason = lock.allow_failed_checks_reason or override_reason
    key = next((list(e.key) for e in lock.snapshots if e.key), None)
    try:
        result = train(name, spec, manifests, store, key=key, override_reason=reason,
                       seeded=est_doc.get("seeded") or {})
    except (IntegrityError, UntrainableSnapshot, TrainingError) as exc:
        raise CannotReproduce(str(exc)) from None

    recorded = dict(run.data.metrics)
    metrics = {}
    for k in sorted(set(recorded) | set(result.metrics)):
        a, b = recorded.get(k), result.metrics.get(k)
        metrics[k] = Reproduced(recorded=a, reproduced=b, identical=_same(a, b))
    rec_pred = run.data.tags.get(TAG_PREDICTIONS)
    predictions = Reproduced(recorded=rec_pred, reproduced=result.predictions_sha256,
                             identical=rec_pred == result.predictions_sha256)
    rec_libs = summary.get("library_versions") or {}
    now_libs = library_versions()
    lib_diff = {k: LibraryDifference(recorded=rec_libs.get(k), current=now_libs.get(k))
                for k in sorted(set(rec_libs) | set(now_libs)) if rec_libs.get(k) != now_libs.get(k)}
    rec_code = run.data.params.get("code_version")
    return ReproduceReport(
        run_id=run_id,
        model=name,
        model_partition=lock.model_partition,
        identical=all(m.identical for m in metrics.values()) and predictions.identical,
        metrics=metrics,
        predictions=predictions,
        snapshots=tuple(ReproducedSnapshot(asset=m.asset, partition=m.partition, version=m.version,
                                           rows=m.row_count) for m in manifests),
        storage=str(store),
        code_version=CodeCheck(recorded=rec_code, current=result.code_version,
                               same=rec_code == result.code_version),
        library_differences=lib_diff,
        allow_failed_checks_reason=result.override_reason,
        seconds=round(result.seconds.get("total", 0.0), 3),
    )
