"""Training, without Dagster: pinned versions in (hash-verified), a fitted and evaluated model out.

The steps, each deterministic so that a retrain from the same lock gives identical metrics:

1. the gate: every version must have passed its blocking checks (or an override reason is given);
2. load only the needed columns of each version through the store (every file hash-verified);
   decimals become float64, numeric features float64, so the dtypes never depend on the engine;
3. sort all rows by the snapshot key (then partition), so the row order never depends on storage;
4. split by a stable hash of the key (``split.py``);
5. build the estimator, set every unset ``random_state`` to a fixed seed (recorded), fit;
6. evaluate on the test rows: accuracy, precision, recall, F1, ROC AUC for classifiers;
   MAE, RMSE, R² for regressors; and a digest of the test predictions, which must also match.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from snapshot_platform import __version__
from snapshot_platform.catalog import ModelSpec
from snapshot_platform.gate import assert_trainable
from snapshot_platform.capture import library_versions as snapshot_library_versions
from snapshot_platform.store import Manifest, SnapshotStore

# pandas (and the split, whose store/keys.py uses it) are imported where a frame is built: loading the
# Dagster definitions, which every run worker and the daemon do, needs neither
if TYPE_CHECKING:
    import pandas as pd

from snapshot_platform.training.estimator import (
    Task,
    estimator_params,
    make_estimator,
    seed_params,
    task_of,
)

PARTITION_COLUMN = "_partition"
# Bump when a change here changes what a training run computes (the split, conversions, metrics).
TRAINING_REVISION = "1"
_LIBRARIES = ("scikit-learn", "numpy", "pandas", "pyarrow", "scipy", "mlflow")


class TrainingError(RuntimeError):
    """The data cannot be trained on as specified (a missing column, an empty split, one class)."""


def code_version(spec: ModelSpec) -> str:
    """Changes when what a training run computes changes: the model spec or the training code."""
    text = json.dumps(spec.spec_json(), sort_keys=True) + f"\n{TRAINING_REVISION}\n{__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def library_versions() -> dict[str, str]:
    return snapshot_library_versions(_LIBRARIES)


@dataclass
class TrainingResult:
    model: str
    spec: ModelSpec
    task: Task
    estimator: Any
    manifests: list[Manifest]
    key: list[str]
    frame: pd.DataFrame  # every loaded row, sorted, with PARTITION_COLUMN; the columns trained on
    test_mask: np.ndarray
    y_pred: np.ndarray
    y_score: np.ndarray | None
    metrics: dict[str, float]
    seeded: dict[str, Any]  # the random_state values this run set (applied as-is when reproducing)
    override_reason: str | None
    checks_overridden: dict[tuple[str, str], list[str]]
    importances: dict[str, float]
    importance_method: str
    predictions_sha256: str
    code_version: str
    library_versions: dict[str, str]
    rows_dropped_null_target: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.spec.features]

    @property
    def y(self) -> pd.Series:
        return self.frame[self.spec.target]

    @property
    def X_train(self) -> pd.DataFrame:
        return self.X[~self.test_mask]

    @property
    def X_test(self) -> pd.DataFrame:
        return self.X[self.test_mask]

    @property
    def y_train(self) -> pd.Series:
        return self.y[~self.test_mask]

    @property
    def y_test(self) -> pd.Series:
        return self.y[self.test_mask]

    @property
    def params(self) -> dict[str, Any]:
        return estimator_params(self.estimator)

    def rows_by_partition(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        parts = self.frame[PARTITION_COLUMN].to_numpy()
        for m in self.manifests:
            sel = parts == m.partition
            out[m.partition] = {"train": int((sel & ~self.test_mask).sum()),
                                   "test": int((sel & self.test_mask).sum())}
        return out


def key_of(manifests: list[Manifest], fallback: list[str] | None = None) -> list[str]:
    """The snapshot key recorded in the manifests (they must agree), else ``fallback``."""
    keys = {tuple(m.key or ()) for m in manifests} - {()}
    if len(keys) > 1:
        raise TrainingError(f"the versions disagree on the snapshot key: {sorted(keys)}")
    if keys:
        return list(keys.pop())
    if fallback:
        return list(fallback)
    raise TrainingError("the manifests record no key and none was given")


def _to_float(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(pa.float64())


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def load_frame(
    store: SnapshotStore, manifests: list[Manifest], columns: list[str], spec: ModelSpec, task: Task
) -> pd.DataFrame:
    """The needed columns of every version as one DataFrame with a ``_partition`` column, hash-verified."""
    import pandas as pd

    frames = []
    for m in manifests:
        names = [c.name for c in m.schema]
        missing = [c for c in columns if c not in names]
        if missing:
            raise TrainingError(
                f"{m.where} has no column "
                f"{', '.join(repr(c) for c in missing)} (columns: {', '.join(names)})"
            )
        batches = list(store.iter_batches(m, columns=columns))
        if batches:
            table = pa.Table.from_batches(batches)
        else:
            table = store.read_table(m.asset, m.partition, m.version, columns=columns)
        for name in table.column_names:
            t = table.schema.field(name).type
            numeric_feature = name in spec.features and _is_numeric(t)
            numeric_target = name == spec.target and (task == "regression" or pa.types.is_decimal(t))
            if pa.types.is_decimal(t) or numeric_feature or numeric_target:
                table = table.set_column(table.schema.get_field_index(name), name, _to_float(table[name]))
        df = table.to_pandas()
        df[PARTITION_COLUMN] = m.partition
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _digest(y_pred: np.ndarray, y_score: np.ndarray | None) -> str:
    h = hashlib.sha256()
    arr = np.asarray(y_pred)
    if arr.dtype.kind in "biuf":
        h.update(arr.astype(np.float64).tobytes())
    else:
        h.update("\x1f".join(map(str, arr.tolist())).encode())
    if y_score is not None:
        h.update(np.asarray(y_score, dtype=np.float64).tobytes())
    return h.hexdigest()


def _final_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est


def _importances(
    est: Any, X_test: pd.DataFrame, y_test: pd.Series, features: list[str]
) -> tuple[dict[str, float], str]:
    final = _final_step(est)
    values = getattr(final, "feature_importances_", None)
    method = "feature_importances_"
    if values is None and getattr(final, "coef_", None) is not None:
        coef = np.abs(np.asarray(final.coef_, dtype=float))
        values = coef.mean(axis=0) if coef.ndim > 1 else coef
        method = "abs(coef_)"
    if values is None or len(values) != len(features):
        from sklearn.inspection import permutation_importance

        r = permutation_importance(est, X_test, y_test, n_repeats=5, random_state=0)
        values, method = r.importances_mean, "permutation (test set, 5 repeats)"
    return {f: float(v) for f, v in zip(features, values)}, method


def _evaluate(
    est: Any, task: Task, X_test: pd.DataFrame, y_test: pd.Series, notes: list[str]
) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    from sklearn import metrics as skm

    y_pred = np.asarray(est.predict(X_test))
    if task == "regression":
        y = y_test.to_numpy(dtype=float)
        mse = skm.mean_squared_error(y, y_pred)
        return {
            "mae": float(skm.mean_absolute_error(y, y_pred)),
            "rmse": float(math.sqrt(mse)),
            "r2": float(skm.r2_score(y, y_pred)),
        }, y_pred, None
    classes = list(getattr(est, "classes_", np.unique(y_test)))
    out = {"accuracy": float(skm.accuracy_score(y_test, y_pred))}
    if len(classes) == 2:
        pos = classes[1]
        kw: dict[str, Any] = {"average": "binary", "pos_label": pos, "zero_division": 0}
    else:
        kw = {"average": "weighted", "zero_division": 0}
    out["precision"] = float(skm.precision_score(y_test, y_pred, **kw))
    out["recall"] = float(skm.recall_score(y_test, y_pred, **kw))
    out["f1"] = float(skm.f1_score(y_test, y_pred, **kw))
    y_score: np.ndarray | None = None
    if hasattr(est, "predict_proba"):
        y_score = np.asarray(est.predict_proba(X_test), dtype=float)
    elif hasattr(est, "decision_function"):
        y_score = np.asarray(est.decision_function(X_test), dtype=float)
    if y_score is not None:
        try:
            if len(classes) == 2:
                col = y_score[:, 1] if y_score.ndim == 2 else y_score
                out["roc_auc"] = float(skm.roc_auc_score(y_test == classes[1], col))
            else:
                out["roc_auc"] = float(skm.roc_auc_score(y_test, y_score, multi_class="ovr",
                                                         average="weighted", labels=classes))
        except ValueError as exc:
            notes.append(f"roc_auc not computed: {exc}")
    else:
        notes.append("roc_auc not computed: the estimator has neither predict_proba nor decision_function")
    return out, y_pred, y_score


def train(
    model: str,
    spec: ModelSpec,
    manifests: list[Manifest],
    store: SnapshotStore,
    *,
    key: list[str] | None = None,
    override_reason: str | None = None,
    seeded: dict[str, Any] | None = None,
) -> TrainingResult:
    """Train ``spec`` on exactly these versions. ``seeded`` given (from a run): apply it instead of seeding."""
    if not manifests:
        raise TrainingError(f"model {model}: no snapshot versions to train on")
    timings: dict[str, float] = {}
    started = time.monotonic()
    overridden: dict[tuple[str, str], list[str]] = {}
    for m in manifests:
        failed = assert_trainable(m, override_reason)
        if failed:
            overridden[(m.asset, m.partition)] = failed
    key = key_of(manifests, key)
    by = list(spec.split.by or key)
    est = make_estimator(spec.estimator.class_path, dict(spec.estimator.params))
    task = task_of(est)
    columns = list(dict.fromkeys([*key, *by, *spec.features, spec.target]))
    frame = load_frame(store, manifests, columns, spec, task)
    timings["load"] = time.monotonic() - started

    null_target = frame[spec.target].isna().to_numpy()
    dropped = int(null_target.sum())
    if dropped:
        frame = frame[~null_target]
    frame = frame.sort_values([*key, PARTITION_COLUMN], kind="mergesort", ignore_index=True)
    from snapshot_platform.training import split as split_mod

    mask = split_mod.test_mask(frame, by, spec.split.test_fraction)
    n_test, n_train = int(mask.sum()), int((~mask).sum())
    if n_test == 0 or n_train == 0:
        raise TrainingError(
            f"model {model}: the split gives {n_train} training and {n_test} test rows out of {len(frame)}; "
            "train on more partitions or change split.test_fraction"
        )
    y_train = frame[spec.target][~mask]
    if task == "classification" and y_train.nunique() < 2:
        raise TrainingError(f"model {model}: the training rows hold a single class of {spec.target!r}")

    if seeded is None:
        seeded = seed_params(est)
    elif seeded:
        est.set_params(**seeded)
    X = frame[spec.features]
    t0 = time.monotonic()
    est.fit(X[~mask], y_train)
    timings["fit"] = time.monotonic() - t0

    notes: list[str] = []
    if dropped:
        notes.append(f"{dropped} rows with a null target were left out")
    t0 = time.monotonic()
    X_test, y_test = X[mask], frame[spec.target][mask]
    metrics, y_pred, y_score = _evaluate(est, task, X_test, y_test, notes)
    importances, method = _importances(est, X_test, y_test, spec.features)
    timings["evaluate"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - started
    return TrainingResult(
        model=model,
        spec=spec,
        task=task,
        estimator=est,
        manifests=list(manifests),
        key=key,
        frame=frame,
        test_mask=mask,
        y_pred=y_pred,
        y_score=y_score,
        metrics=metrics,
        seeded=dict(seeded),
        override_reason=override_reason if overridden else None,
        checks_overridden=overridden,
        importances=importances,
        importance_method=method,
        predictions_sha256=_digest(y_pred, y_score),
        code_version=code_version(spec),
        library_versions=library_versions(),
        rows_dropped_null_target=dropped,
        notes=notes,
        seconds=timings,
    )
