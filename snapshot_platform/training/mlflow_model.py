"""The fitted model and the figures a training run logs to MLflow (training/mlflow_logging.py logs the run).

The model is saved with skops where every type it holds is trusted (scikit-learn, NumPy, SciPy), the
trusted types computed from the model itself; otherwise with cloudpickle, and the run says why.
"""

from __future__ import annotations

from typing import Any

from snapshot_platform.training.train import TrainingResult

_TRUSTED_MODULES = {"sklearn", "numpy", "scipy"}
TRUSTED_MODULES = frozenset(_TRUSTED_MODULES)  # the modules whose types a skops load trusts


def model_format(est: Any) -> tuple[str, list[str] | None, str | None]:
    """``("skops", trusted types, None)``, or ``("cloudpickle", None, why)`` when skops cannot be trusted."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=sio.dumps(est))
    except Exception as exc:  # skops cannot represent the object at all
        return "cloudpickle", None, f"skops cannot serialize {type(est).__name__}: {exc}"
    foreign = [t for t in untrusted if t.split(".")[0] not in _TRUSTED_MODULES]
    if foreign:
        return "cloudpickle", None, f"the model holds types outside scikit-learn/NumPy/SciPy: {', '.join(foreign)}"
    return "skops", list(untrusted), None


def log_figures(mlflow: Any, result: TrainingResult, model_partition: str | None) -> None:
    """The confusion matrix (classifiers) or residuals (regressors) on the test set, and the importances."""
    from snapshot_platform.training import plots

    title = f"{result.model} {model_partition or ''} (test set, {int(result.test_mask.sum())} rows)"
    if result.task == "classification":
        labels = list(getattr(result.estimator, "classes_", sorted(set(result.y_test))))
        fig = plots.confusion_matrix_figure(result.y_test, result.y_pred, labels, title)
        mlflow.log_figure(fig, "plots/confusion_matrix.png")
    else:
        fig = plots.residuals_figure(result.y_test, result.y_pred, title)
        mlflow.log_figure(fig, "plots/residuals.png")
    plots.close(fig)
    fig = plots.importances_figure(result.importances, result.importance_method,
                                   f"{result.model}: feature importances")
    mlflow.log_figure(fig, "plots/feature_importances.png")
    plots.close(fig)


def log_model(mlflow: Any, result: TrainingResult, fmt: str, trusted: list[str] | None, data_summary: str,
              register: bool) -> Any:
    """The fitted estimator (skops where it can be, else cloudpickle), registered unless told not to."""
    from mlflow.models import infer_signature

    sample = result.X_train.head(50)
    signature = infer_signature(sample, result.estimator.predict(sample))
    return mlflow.sklearn.log_model(
        result.estimator,
        name="model",
        signature=signature,
        input_example=result.X_train.head(5),
        serialization_format=fmt,
        skops_trusted_types=trusted,
        pip_requirements=_requirements(result.library_versions, fmt),
        registered_model_name=result.model if register else None,
        metadata={"snapshot_platform": {"snapshots": data_summary,
                                         "code_version": result.code_version}},
    )


def _requirements(versions: dict[str, str], fmt: str) -> list[str]:
    reqs = [f"{lib}=={versions[lib]}" for lib in ("scikit-learn", "numpy", "pandas", "scipy") if lib in versions]
    import importlib.metadata

    extra = "skops" if fmt == "skops" else "cloudpickle"
    try:
        reqs.append(f"{extra}=={importlib.metadata.version(extra)}")
    except importlib.metadata.PackageNotFoundError:
        reqs.append(extra)
    return reqs
