"""One MLflow run per training: params, metrics, model, figures, dataset inputs, lock, tags, registry.

Defaults: ``$MLFLOW_TRACKING_URI`` when set, else a SQLite store ``sqlite:///<platform home>/mlflow.db``
with artifacts in ``<platform home>/mlartifacts`` (a new experiment gets its artifact location
there; with a tracking server, the server decides). This module is plain Python; the Dagster
resource that configures it is ``snapshot_platform.orchestration.resources.MlflowResource``.

Lineage: each snapshot version trained on is a dataset input whose digest is the version id (not
MLflow's own digest, which hashes only the first rows) and whose source is the version's storage
URI; ``snapshot_lock.json`` lists the versions with their file hashes; ``model_spec.json`` is the
catalog entry, so ``reproduce`` needs only the run id, even after the catalog changed.

Model format: skops (no arbitrary code runs on load), trusting only the types scikit-learn, NumPy
and SciPy define that the fitted model actually holds (computed with ``skops.io.get_untrusted_types``
from the model itself, e.g. ``sklearn.tree._tree.Tree`` for a random forest). An estimator that holds
other types (a custom transformer) cannot be trusted automatically: it is saved with cloudpickle,
and the run says so in the tag ``snapshot_platform.model_format`` and a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from snapshot_platform.home import platform_home
from snapshot_platform.store import SnapshotStore
from snapshot_platform.training import lock as lock_mod
from snapshot_platform.training.lock import LockEntry, SnapshotLock
from snapshot_platform.training.mlflow_model import log_figures, log_model, model_format
from snapshot_platform.training.model_versions import TAG_DAGSTER_RUN, describe_version
from snapshot_platform.training.train import PARTITION_COLUMN, TrainingResult

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
MODEL_SPEC_NAME = "model_spec.json"
ESTIMATOR_PARAMS_NAME = "estimator_params.json"
SUMMARY_NAME = "training_summary.json"
IMPORTANCES_NAME = "feature_importances.json"
EXPERIMENT_PREFIX = "models/"

# tags
TAG_DAGSTER_ASSET = "dagster.asset_key"
TAG_DAGSTER_PARTITION = "dagster.partition"
TAG_MODEL = "snapshot_platform.model"
TAG_CODE_VERSION = "snapshot_platform.code_version"
TAG_PREDICTIONS = "snapshot_platform.predictions_sha256"
TAG_DATA = "snapshot_platform.snapshots"
TAG_FORMAT = "snapshot_platform.model_format"
TAG_OVERRIDE = "snapshot_platform.gate_override_reason"
TAG_DATA_VERSION = "snapshot_platform.data_version"

# dataset input contexts: each snapshot version's training rows, and the evaluation (test) split
CONTEXT_TRAINING = "training"
CONTEXT_EVALUATION = "evaluation"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in the platform home."""
    return os.environ.get(TRACKING_ENV) or f"sqlite:///{platform_home() / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Beside a local SQLite store: ``<folder of mlflow.db>/mlartifacts``; otherwise the server decides."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def data_version(lock: SnapshotLock) -> str:
    """A short digest of the versions trained on (asset/partition@version, in order): two runs on
    the same data share it, a changed version changes it. It names the run and the evaluation split."""
    import hashlib

    text = ",".join(f"{e.asset}/{e.partition}@{e.version}" for e in lock.snapshots)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_name(model: str, model_partition: str | None, lock: SnapshotLock) -> str:
    """``churn 2024-01-03 @ 1a2b3c4d``: the model, its partition and the data version, so two runs
    of one partition on different data are told apart in the runs list."""
    return f"{model} {model_partition} @ {data_version(lock)}" if model_partition else \
        f"{model} @ {data_version(lock)}"


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    artifact_uri: str
    model_uri: str
    registered_model_name: str
    registered_model_version: str | None
    model_format: str


def _dataset_source(uri: str) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": they are the same class
        return resolve_dataset_source(uri)


def _lineage_note(result: TrainingResult, lock: SnapshotLock, run_id: str) -> str:
    lines = [f"**{result.model}** trained on pinned snapshot versions (`{lock_mod.LOCK_NAME}`):", ""]
    for e in lock.snapshots:
        lines.append(f"- `{e.asset}/{e.partition}` version `{e.version}`, {e.row_count} rows")
    lines += ["", f"Reproduce: `snapshot-platform reproduce {run_id}`"]
    return "\n".join(lines)


class MlflowTracking:
    """A tracking URI (and artifact root): log training runs there and read them back."""

    def __init__(self, tracking_uri: str | None = None, artifact_root: str | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.artifact_root = artifact_root or default_artifact_root(self.tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"MlflowTracking({self.tracking_uri!r})"

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        """The ``mlflow`` module pointed at this store (tracking, and so registry), restored afterwards.

        ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI`` (and MLflow's own context
        manager *unsets* it on exit), so both the module's setting and the variable are put back here.
        """
        import mlflow
        from mlflow.tracking._tracking_service import utils as tracking_utils

        previous_env = os.environ.get(TRACKING_ENV)
        previous = getattr(tracking_utils, "_tracking_uri", None)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield mlflow
        finally:
            if previous is not None:
                mlflow.set_tracking_uri(previous)
            elif hasattr(tracking_utils, "_tracking_uri"):
                tracking_utils._tracking_uri = None
            if previous_env is None:
                os.environ.pop(TRACKING_ENV, None)
            else:
                os.environ[TRACKING_ENV] = previous_env

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another run
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ------------------------------------------------------------ writing

    def log_training(
        self,
        result: TrainingResult,
        store: SnapshotStore,
        *,
        model_partition: str | None = None,
        extra_tags: dict[str, str] | None = None,
        register: bool = True,
    ) -> LoggedRun:
        """Log ``result`` as one run in the experiment ``models/<name>`` and register its model."""
        lock = build_lock(result, store, model_partition)
        data_summary = ",".join(f"{e.asset}/{e.partition}@{e.version}" for e in lock.snapshots)
        fmt, trusted, why = model_format(result.estimator)
        if why:
            warnings.warn(f"model {result.model}: saved with cloudpickle, not skops: {why}", stacklevel=2)
        params = _run_params(result, model_partition)
        tags = {**_run_tags(result, model_partition, data_summary, fmt, extra_tags),
                TAG_DATA_VERSION: data_version(lock)}
        summary = _run_summary(result, fmt, why)

        with self.active() as mlflow, warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold missing values: known, and not an error here
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
            warnings.filterwarnings("ignore", message=".*pickle or cloudpickle.*")
            experiment_id = self.experiment_id(EXPERIMENT_PREFIX + result.model)
            name = run_name(result.model, model_partition, lock)
            with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
                run_id = run.info.run_id
                mlflow.set_tags({**tags, "mlflow.note.content": _lineage_note(result, lock, run_id)})
                mlflow.log_params({k: v for k, v in params.items() if v is not None})
                evaluation = _log_dataset_inputs(mlflow, result, lock)
                _log_documents(mlflow, result, lock, summary)
                log_figures(mlflow, result, model_partition)
                info = log_model(mlflow, result, fmt, trusted, data_summary, register)
                # the metrics were computed on the evaluation split by this model: linked to both, so
                # the model's page lists the dataset and the metrics carry it (the run gets them too)
                mlflow.log_metrics(result.metrics, model_id=getattr(info, "model_id", None), dataset=evaluation)
                version = getattr(info, "registered_model_version", None)
                if register and version is not None:
                    client = self.client()
                    for k, v in ((TAG_DATA, data_summary[:5000]), (TAG_CODE_VERSION, result.code_version),
                                 ("mlflow_run_id", run_id), *(((k, v) for k, v in (extra_tags or {}).items()))):
                        client.set_model_version_tag(result.model, str(version), k, v)
                    # the version's description and tags: the lock's summary and the Dagster run
                    describe_version(client, result.model, str(version), lock,
                                     (extra_tags or {}).get(TAG_DAGSTER_RUN))
                artifact_uri = run.info.artifact_uri
        return LoggedRun(
            run_id=run_id,
            experiment_id=experiment_id,
            tracking_uri=self.tracking_uri,
            artifact_uri=artifact_uri,
            model_uri=info.model_uri,
            registered_model_name=result.model,
            registered_model_version=str(version) if version is not None else None,
            model_format=fmt,
        )

    # ------------------------------------------------------------ reading

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_run(run_id)
        except MlflowException as exc:
            raise RunNotFound(f"no MLflow run {run_id!r} in {self.tracking_uri} ({exc.message})") from None

    def load_text(self, run_id: str, path: str) -> str:
        from mlflow.exceptions import MlflowException

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with self.active() as mlflow, tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp,
                                                            tracking_uri=self.tracking_uri)
            except (MlflowException, OSError) as exc:
                raise RunNotFound(f"run {run_id} has no artifact {path!r}: was it logged by snapshot_platform? "
                                  f"({exc})") from None
            return Path(local).read_text(encoding="utf-8")

    def load_lock(self, run_id: str) -> SnapshotLock:
        return SnapshotLock.from_json(self.load_text(run_id, lock_mod.LOCK_NAME),
                                      where=f"run {run_id}: {lock_mod.LOCK_NAME}")

    def load_json(self, run_id: str, path: str) -> dict[str, Any]:
        return json.loads(self.load_text(run_id, path))




# ---------------------------------------------------------------- the steps of log_training


def build_lock(result: TrainingResult, store: SnapshotStore, model_partition: str | None) -> SnapshotLock:
    """The run's ``snapshot_lock.json``: every version it trained on, with its folder's URI."""
    entries = tuple(
        LockEntry.of(m, store.uri(store.version_dir(m.asset, m.partition, m.version)),
                     result.checks_overridden.get((m.asset, m.partition)))
        for m in result.manifests)
    return SnapshotLock(model=result.model, model_partition=model_partition, storage_url=store.uri(store.root),
                        allow_failed_checks_reason=result.override_reason, snapshots=entries)


def _run_params(result: TrainingResult, model_partition: str | None) -> dict[str, Any]:
    spec = result.spec
    params: dict[str, Any] = {
        "model": result.model,
        "model_partition": model_partition,
        "snapshot": spec.snapshot,
        "snapshot_partitions": ",".join(m.partition for m in result.manifests),
        "task": result.task,
        "features": ",".join(spec.features),
        "target": spec.target,
        "estimator_class": spec.estimator.class_path,
        "split_test_fraction": spec.split.test_fraction,
        "split_by": ",".join(spec.split.by or result.key),
        "rows_train": int((~result.test_mask).sum()),
        "rows_test": int(result.test_mask.sum()),
        "code_version": result.code_version,
    }
    for k, v in sorted(spec.estimator.params.items()):
        params[f"estimator.{k}"] = v
    for k, v in sorted(result.seeded.items()):
        params[f"estimator.{k}"] = v
    if result.rows_dropped_null_target:
        params["rows_dropped_null_target"] = result.rows_dropped_null_target
    if result.override_reason:
        params["allow_failed_checks_reason"] = result.override_reason[:500]
    return params


def _run_tags(result: TrainingResult, model_partition: str | None, data_summary: str, fmt: str,
              extra_tags: dict[str, str] | None) -> dict[str, str]:
    tags = {
        TAG_MODEL: result.model,
        TAG_CODE_VERSION: result.code_version,
        TAG_PREDICTIONS: result.predictions_sha256,
        TAG_DATA: data_summary[:5000],
        TAG_FORMAT: fmt,
        **{f"library.{k}": v for k, v in result.library_versions.items()},
        **(extra_tags or {}),
    }
    if model_partition:
        tags.setdefault(TAG_DAGSTER_PARTITION, model_partition)
    if result.override_reason:
        tags[TAG_OVERRIDE] = result.override_reason[:5000]
    return tags


def _run_summary(result: TrainingResult, fmt: str, why: str | None) -> dict[str, Any]:
    return {
        "model": result.model,
        "task": result.task,
        "key": result.key,
        "rows_by_partition": result.rows_by_partition(),
        "rows_dropped_null_target": result.rows_dropped_null_target,
        "seeded": result.seeded,
        "predictions_sha256": result.predictions_sha256,
        "code_version": result.code_version,
        "library_versions": result.library_versions,
        "model_format": fmt,
        "model_format_note": why,
        "checks_overridden": {f"{a}/{p}": c for (a, p), c in result.checks_overridden.items()},
        "notes": result.notes,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    }


def _log_dataset_inputs(mlflow: Any, result: TrainingResult, lock: SnapshotLock) -> Any:
    """Lineage: one dataset input per snapshot version (context ``training``, its rows of the
    training split, its digest the version id), and the evaluation split (context ``evaluation``,
    the test rows of every version, its digest the data version): returned, the metrics link to it."""
    spec = result.spec
    parts = result.frame[PARTITION_COLUMN].to_numpy()
    test = result.test_mask
    used = [*spec.features, spec.target]
    for m, e in zip(result.manifests, lock.snapshots):
        df = result.frame.loc[(parts == m.partition) & ~test, used]
        ds = mlflow.data.from_pandas(
            df, source=_dataset_source(e.uri), name=f"{m.asset}/{m.partition}",
            digest=m.version, targets=spec.target,
        )
        mlflow.log_input(ds, context=CONTEXT_TRAINING, tags={
            "snapshot.asset": m.asset, "snapshot.partition": m.partition,
            "snapshot.version": m.version,
        })
    evaluation = mlflow.data.from_pandas(
        result.frame.loc[test, used], source=_dataset_source(lock.storage_url),
        name=f"{result.model} evaluation split", digest=data_version(lock), targets=spec.target,
    )
    mlflow.log_input(evaluation, context=CONTEXT_EVALUATION, tags={
        "snapshot.versions": ",".join(f"{e.asset}/{e.partition}@{e.version}" for e in lock.snapshots)[:500],
        "split.test_fraction": str(spec.split.test_fraction),
        "split.by": ",".join(spec.split.by or result.key),
    })
    return evaluation


def _log_documents(mlflow: Any, result: TrainingResult, lock: SnapshotLock, summary: dict[str, Any]) -> None:
    """The lock, the model spec, the estimator's parameters, the importances and the summary."""
    spec = result.spec
    mlflow.log_text(lock.to_json(), lock_mod.LOCK_NAME)
    mlflow.log_text(json.dumps({"name": result.model, "spec": spec.spec_json()}, indent=2),
                    MODEL_SPEC_NAME)
    mlflow.log_text(json.dumps({"class": spec.estimator.class_path,
                                "params": spec.estimator.params,
                                "seeded": result.seeded,
                                "effective": result.params}, indent=2, default=str),
                    ESTIMATOR_PARAMS_NAME)
    mlflow.log_text(json.dumps({"method": result.importance_method,
                                "importances": result.importances}, indent=2),
                    IMPORTANCES_NAME)
    mlflow.log_text(json.dumps(summary, indent=2, default=str), SUMMARY_NAME)
