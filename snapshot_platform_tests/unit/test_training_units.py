"""Training building blocks without Dagster: the catalog's ``models:`` section, the split, seeding,
the training gate on a manifest built here, and ``train`` itself on versions published in the test.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from snapshot_platform.catalog import CatalogError, ModelSpec, load_catalog, parse_catalog
from snapshot_platform.gate import UntrainableSnapshot
from snapshot_platform.store import Manifest, SnapshotStore, keys
from snapshot_platform.training import split
from snapshot_platform.training.estimator import make_estimator, seed_params
from snapshot_platform.training.lock import LockEntry, LockError, SnapshotLock
from snapshot_platform.training.train import TrainingError, code_version, train

QUERY = "SELECT * FROM t WHERE d >= :partition_start AND d < :partition_end"


def catalog_doc(**models: Any) -> dict[str, Any]:
    return {
        "sources": {"db": {"kind": "sqlite", "path": "x.sqlite"}},
        "snapshots": {"customers": {"source": "db", "query": QUERY, "key": ["id"],
                                    "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
        "models": models,
    }


CHURN = {
    "snapshot": "customers",
    "partitions": 2,
    "features": ["a", "b"],
    "target": "y",
    "estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                  "params": {"n_estimators": 5}},
    "split": {"test_fraction": 0.25, "by": "id"},
}


# ---------------------------------------------------------------- catalog


def test_models_section_parses_the_issue_shape() -> None:
    cat = parse_catalog(catalog_doc(churn=CHURN), "cat.yaml")
    spec = cat.models["churn"]
    assert spec.partitions == 2 and spec.split.by == ["id"] and spec.split.test_fraction == 0.25
    assert spec.estimator.class_path == "sklearn.ensemble.RandomForestClassifier"
    assert spec.spec_json()["estimator"]["class"] == "sklearn.ensemble.RandomForestClassifier"
    # defaults: one partition, split by the snapshot key, a fifth held out
    minimal = {k: v for k, v in CHURN.items() if k not in ("partitions", "split")}
    spec = parse_catalog(catalog_doc(m=minimal)).models["m"]
    assert spec.partitions == 1 and spec.split.by is None and spec.split.test_fraction == 0.2
    # a round trip through the logged JSON gives the same spec (reproduce relies on it)
    assert ModelSpec.model_validate(CHURN).spec_json() == parse_catalog(catalog_doc(c=CHURN)).models["c"].spec_json()


def test_the_demo_catalog_declares_the_churn_model() -> None:
    spec = load_catalog().models["churn"]
    assert spec.snapshot == "customer_data" and spec.partitions == 3
    assert spec.features == ["total_purchases", "tenure_days", "avg_order_value"]


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"snapshot": "nope"}, "snapshot", "unknown snapshot 'nope'"),
        ({"partitions": 0}, "partitions", "greater than or equal to 1"),
        ({"estimator": {"class": "sklearn.ensemble.NoSuchForest"}}, "estimator.class", "has no attribute 'NoSuchForest'"),
        ({"estimator": {"class": "nosuchpackage.Model"}}, "estimator.class", "cannot import module 'nosuchpackage'"),
        ({"estimator": {"class": "collections.OrderedDict"}}, "estimator.class", "not a scikit-learn estimator"),
        ({"estimator": {"class": "sklearn.preprocessing.StandardScaler"}}, "estimator",
         "neither a classifier nor a regressor"),
        ({"estimator": {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_trees": 5}}},
         "estimator", "n_trees"),
        ({"estimator": {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": "many"}}},
         "estimator", "n_estimators"),
        ({"estimator": {"class": "sklearn.ensemble.RandomForestClassifier", "parms": {}}}, "estimator.parms",
         "unknown field"),
        ({"target": "a"}, "(the entry)", "also listed in features"),
        ({"features": ["a", "a"]}, "features", "lists a column twice"),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction", "less than 1"),
        ({"epochs": 3}, "epochs", "unknown field"),
    ],
)
def test_model_errors_name_file_entry_and_field(tmp_path: Path, change: dict[str, Any], field: str,
                                                message: str) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(yaml.safe_dump(catalog_doc(churn={**CHURN, **change})))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    text = str(err.value)
    assert f"{path}: models.churn: field '{field}'" in text, text
    assert message in text, text


# ---------------------------------------------------------------- split and seeding


def test_split_is_a_stable_hash_of_the_key() -> None:
    df = pd.DataFrame({"id": np.arange(10_000)})
    mask = split.test_mask(df, ["id"], 0.2)
    assert 0.18 < mask.mean() < 0.22
    # the same answer for the same key whatever the row order, other rows or dtype
    shuffled = df.sample(frac=1, random_state=3)
    assert (split.test_mask(shuffled, ["id"], 0.2) == mask[shuffled["id"].to_numpy()]).all()
    as_float = pd.DataFrame({"id": df["id"].astype(float)})
    as_decimal = pd.DataFrame({"id": [Decimal(i) for i in range(10_000)]})
    assert (split.test_mask(as_float, ["id"], 0.2) == mask).all()
    assert (split.test_mask(as_decimal, ["id"], 0.2) == mask).all()
    # pinned values: a change of the hash would move rows between train and test in every model
    assert [i for i in range(20) if mask[i]] == [i for i in range(20) if split.bucket(str(i)) < 0.2]
    assert keys.canonical(dt.date(2024, 1, 2)) == "2024-01-02"
    assert keys.canonical(None) == keys.canonical(float("nan"))
    assert keys.key_strings(pd.DataFrame({"a": [1], "b": ["x"]}), ["a", "b"]) == ["1\x1fx"]
    # a larger test fraction only adds rows to the test set
    assert (split.test_mask(df, ["id"], 0.3) | ~mask).all()


def test_unset_random_states_are_seeded_and_reported() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 3})
    assert seed_params(est) == {"random_state": 0} and est.random_state == 0
    est = make_estimator("sklearn.ensemble.RandomForestClassifier", {"random_state": 7})
    assert seed_params(est) == {} and est.random_state == 7
    pipe = make_pipeline(StandardScaler(), make_estimator("sklearn.linear_model.SGDClassifier", {}))
    assert seed_params(pipe) == {"sgdclassifier__random_state": 0}


# ---------------------------------------------------------------- train() on published versions


def publish(store: SnapshotStore, partition: str, df: pd.DataFrame, checks: dict[str, Any] | None = None) -> dict:
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields: dict[str, Any] = {
        "window": {"start": partition, "end": partition}, "query": QUERY, "query_sha256": "0" * 64,
        "params": {}, "key": ["id"], "source": {"kind": "test"}, "source_state": {}, "dagster_run_id": None,
        "code_version": "test", "library_versions": {},
    }
    if checks is not None:
        fields["checks"] = checks
    return store.publish("customers", partition, table.schema, table.to_batches(), fields).manifest


def frame(start: int, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.normal(size=n)
    return pd.DataFrame({
        "id": np.arange(start, start + n),
        "a": [Decimal(str(round(v, 2))) for v in a],  # decimals train as float64
        "b": b,
        "y": (a + 0.3 * b > 0).astype(int),
    })


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


def spec(**change: Any) -> ModelSpec:
    return ModelSpec.model_validate({**CHURN, **change})


def test_train_is_deterministic_and_independent_of_partition_order(store: SnapshotStore) -> None:
    m1 = publish(store, "2024-01-01", frame(0, 300, 1))
    m2 = publish(store, "2024-01-02", frame(300, 300, 2))
    r1 = train("churn", spec(), [m1, m2], store)
    r2 = train("churn", spec(), [m2, m1], store)
    assert r1.metrics == r2.metrics and r1.predictions_sha256 == r2.predictions_sha256
    assert set(r1.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert r1.metrics["accuracy"] > 0.8
    assert r1.seeded == {"random_state": 0}
    assert r1.frame["a"].dtype == np.float64
    assert r1.rows_by_partition()["2024-01-01"]["train"] + r1.rows_by_partition()["2024-01-01"]["test"] == 300
    # reproducing with the recorded seed gives the same; another seed gives another forest
    assert train("churn", spec(), [m1, m2], store, seeded={"random_state": 0}).metrics == r1.metrics
    assert train("churn", spec(), [m1, m2], store, seeded={"random_state": 5}).predictions_sha256 != r1.predictions_sha256
    assert r1.code_version == code_version(spec()) != code_version(spec(features=["b", "a"]))


def test_regressors_report_mae_rmse_r2(store: SnapshotStore) -> None:
    df = frame(0, 400, 3)
    df["y"] = df["b"] * 3.0 + 1.0
    m = publish(store, "2024-01-01", df)
    r = train("r", spec(estimator={"class": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}}), [m], store)
    assert r.task == "regression" and set(r.metrics) == {"mae", "rmse", "r2"}
    assert r.metrics["r2"] > 0.99 and r.metrics["rmse"] >= r.metrics["mae"] >= 0
    assert r.importance_method == "abs(coef_)" and r.importances["b"] > r.importances["a"]


def test_training_errors_name_the_problem(store: SnapshotStore) -> None:
    m = publish(store, "2024-01-01", frame(0, 50, 4))
    with pytest.raises(TrainingError, match="has no column 'c'"):
        train("churn", spec(features=["a", "c"]), [m], store)
    one_class = frame(100, 50, 5).assign(y=1)
    m1 = publish(store, "2024-01-02", one_class)
    with pytest.raises(TrainingError, match="single class"):
        train("churn", spec(), [m1], store)
    tiny = publish(store, "2024-01-03", frame(200, 1, 6))
    with pytest.raises(TrainingError, match="the split gives"):
        train("churn", spec(), [tiny], store)


FAILED = {"accepted_values_y": {"passed": False, "blocking": True, "severity": "ERROR", "details": {"bad": 3}},
          "volume": {"passed": False, "blocking": False, "severity": "WARN", "details": {}}}


def test_the_gate_refuses_versions_that_failed_a_blocking_check(store: SnapshotStore) -> None:
    good = publish(store, "2024-01-01", frame(0, 200, 7),
                   checks={"volume": {"passed": False, "blocking": False, "severity": "WARN", "details": {}}})
    bad = publish(store, "2024-01-02", frame(200, 200, 8), checks=FAILED)
    assert train("churn", spec(), [good], store).checks_overridden == {}  # a warning does not block
    with pytest.raises(UntrainableSnapshot, match="failed blocking checks accepted_values_y"):
        train("churn", spec(), [good, bad], store)
    with pytest.raises(UntrainableSnapshot):
        train("churn", spec(), [good, bad], store, override_reason="   ")
    r = train("churn", spec(), [good, bad], store, override_reason="labels fixed upstream, ticket 42")
    assert r.checks_overridden == {("customers", "2024-01-02"): ["accepted_values_y"]}
    assert r.override_reason == "labels fixed upstream, ticket 42"


# ---------------------------------------------------------------- the model format


class HomeMadeClassifier:  # stands for a user's own estimator class: skops cannot trust it on its own
    def __init__(self) -> None:
        self.threshold = 0.5


def test_model_format_is_skops_with_computed_trusted_types_else_cloudpickle() -> None:
    from sklearn.linear_model import LogisticRegression

    from snapshot_platform.training.mlflow_model import model_format

    forest = make_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 2, "random_state": 0})
    forest.fit(np.arange(20).reshape(-1, 1), np.arange(20) % 2)
    fmt, trusted, why = model_format(forest)
    assert (fmt, why) == ("skops", None) and trusted == ["sklearn.tree._tree.Tree"]
    assert model_format(LogisticRegression().fit([[0.0], [1.0]], [0, 1])) == ("skops", [], None)
    fmt, trusted, why = model_format(HomeMadeClassifier())
    assert fmt == "cloudpickle" and trusted is None and "HomeMadeClassifier" in why



# ---------------------------------------------------------------- the snapshot lock (training/lock.py)

# ``snapshot_lock.json`` as the release before the lock was typed wrote it, byte for byte
LOCK_BEFORE = """{
  "format_version": 1,
  "model": "churn",
  "model_partition": "2024-03-10",
  "storage_url": "file:///s",
  "allow_failed_checks_reason": "known bad labels",
  "snapshots": [
    {
      "asset": "orders",
      "partition": "2024-03-10",
      "version": "bcdd79b503dc78b4c3c2",
      "uri": "file:///s/snapshots/orders/2024-03-10/bcdd79b503dc78b4c3c2",
      "row_count": 3,
      "files": [
        {
          "path": "part-00000.parquet",
          "sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
          "bytes": 1234,
          "rows": 3
        }
      ],
      "query_sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "key": [
        "id"
      ],
      "window": {
        "start": "2024-03-10T00:00:00+00:00",
        "end": "2024-03-11T00:00:00+00:00"
      },
      "created_at": "2024-03-11T01:02:03+00:00",
      "checks_overridden": [
        "volume"
      ]
    }
  ]
}
"""


def test_a_lock_written_before_the_type_round_trips_and_a_new_one_is_the_same_json() -> None:
    lock = SnapshotLock.from_json(LOCK_BEFORE)
    assert lock.to_json() == LOCK_BEFORE
    [e] = lock.snapshots
    assert (lock.model, lock.model_partition, lock.allow_failed_checks_reason) == ("churn", "2024-03-10",
                                                                                   "known bad labels")
    assert (e.asset, e.partition, e.version, e.row_count, e.key, e.checks_overridden) == (
        "orders", "2024-03-10", "bcdd79b503dc78b4c3c2", 3, ("id",), ("volume",))
    manifest = Manifest.from_dict({
        "window": e.window, "query": "q", "query_sha256": "a" * 64, "params": {}, "key": ["id"], "source": {},
        "source_state": None, "dagster_run_id": None, "code_version": "c", "library_versions": {},
        "format_version": 2, "asset": "orders", "partition": "2024-03-10", "version": "bcdd79b503dc78b4c3c2",
        "created_at": "2024-03-11T01:02:03+00:00", "row_count": 3,
        "files": [{"path": "part-00000.parquet", "sha256": "b" * 64, "bytes": 1234, "rows": 3}],
        "schema": [{"name": "id", "type": "int64", "nullable": False}]}, where="m")
    built = SnapshotLock(model="churn", model_partition="2024-03-10", storage_url="file:///s",
                         allow_failed_checks_reason="known bad labels",
                         snapshots=(LockEntry.of(manifest, e.uri, ["volume"]),))
    assert built.to_json() == LOCK_BEFORE
    assert e.mismatches(manifest) == []
    with pytest.raises(LockError, match=r"^run x: snapshot_lock.json: snapshots\[0\] lacks 'query_sha256'$"):
        SnapshotLock.from_json(LOCK_BEFORE.replace('"query_sha256"', '"query_sha"'),
                               where="run x: snapshot_lock.json")
