"""A catalog ``estimator`` entry → a scikit-learn estimator, and what it takes to fit it deterministically.

``class`` is an import path: a scikit-learn estimator class (``sklearn.ensemble.RandomForestClassifier``)
or a callable returning an estimator (a pipeline factory such as ``mypkg.models.churn_pipeline``).
Validation happens when the catalog loads, so a misspelt class or parameter fails there, naming the
file, the entry and the field, not an hour into a backfill.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal

Task = Literal["classification", "regression"]

SEED = 0  # the random_state given to every estimator that accepts one and has none


def import_object(path: str) -> Any:
    """``package.module.Name`` → the object; a ValueError says what could not be imported."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None


def _is_estimator_class(obj: Any) -> bool:
    from sklearn.base import BaseEstimator

    return inspect.isclass(obj) and issubclass(obj, BaseEstimator)


def check_estimator_path(path: str) -> None:
    """Raise ValueError unless ``path`` names an estimator class or a callable (a factory)."""
    obj = import_object(path)
    if inspect.isclass(obj):
        if not _is_estimator_class(obj):
            raise ValueError(f"{path} is a class but not a scikit-learn estimator (sklearn.base.BaseEstimator)")
        return
    if not callable(obj):
        raise ValueError(f"{path} is neither a scikit-learn estimator class nor a callable returning one")


def make_estimator(path: str, params: dict[str, Any]) -> Any:
    """A fresh, unfitted estimator; a ValueError names a bad parameter or a factory's bad result."""
    from sklearn.base import BaseEstimator

    obj = import_object(path)
    try:
        est = obj(**params)
    except TypeError as exc:
        raise ValueError(f"params do not fit {path}: {exc}") from None
    if not isinstance(est, BaseEstimator):
        raise ValueError(f"{path}(**params) returned {type(est).__name__}, not a scikit-learn estimator")
    validate = getattr(est, "_validate_params", None)  # scikit-learn's own parameter constraints
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"params: {exc}") from None
    task_of(est)
    return est


def task_of(est: Any) -> Task:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(est):
        return "classification"
    if is_regressor(est):
        return "regression"
    raise ValueError(f"{type(est).__name__} is neither a classifier nor a regressor; only those can be trained")


def seed_params(est: Any) -> dict[str, Any]:
    """Every ``random_state`` (nested ones in pipelines too) that is unset, set to :data:`SEED`.

    Returns what was set, so a run records it and a reproduction applies exactly the same.
    """
    filled = {k: SEED for k, v in est.get_params(deep=True).items()
              if (k == "random_state" or k.endswith("__random_state")) and v is None}
    if filled:
        est.set_params(**filled)
    return filled


def estimator_params(est: Any) -> dict[str, Any]:
    """The estimator's effective parameters (deep), as JSON-able values (objects as their repr)."""
    out: dict[str, Any] = {}
    for k, v in sorted(est.get_params(deep=True).items()):
        out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    return out
