"""A platform home with something to look at, for the report and the Dagster UI tests: the demo
catalog's ``customer_data`` snapshotted for 2024-01-01..04 through Dagster (2024-01-04 with a
churn label of 7, so its blocking check ``column_rules_churn_label`` fails), and ``models/churn``
trained on 2024-01-01..03 and logged to MLflow (a SQLite store in the home), its run linked to
``MLFLOW_UI`` (``$SNAPSHOT_PLATFORM_MLFLOW_UI_URL``)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
FAILING_DAY = "2024-01-04"
FAILED_CHECK = "column_rules_churn_label"
SNAPSHOT = "customer_data"
MLFLOW_UI = "http://mlflow.test.invalid:5000"


@dataclass(frozen=True)
class UiState:
    versions: dict[str, str]  # partition -> version
    run_id: str
    run_url: str


def environment(home: Path) -> dict[str, str]:
    """What :func:`build` needs set besides the ``platform_env`` fixture's: MLflow's store and UI."""
    return {"SNAPSHOT_PLATFORM_MLFLOW_UI_URL": MLFLOW_UI, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}


def build(home: Path) -> UiState:
    """Fill the platform home and DAGSTER_HOME the environment names (the ``platform_env`` fixture's,
    and :func:`environment`'s, set by the caller so that the test restores them)."""
    from dagster import DagsterInstance, materialize

    from snapshot_platform.catalog import DEMO_CATALOG, load_catalog
    from snapshot_platform.demo import source_db
    from snapshot_platform.orchestration.definitions import build_assets, build_resources
    from snapshot_platform.orchestration.metadata import MLFLOW_UI_ENV, model_key, snapshot_key
    from snapshot_platform.store import SnapshotStore

    if os.environ.get(MLFLOW_UI_ENV) != MLFLOW_UI or "MLFLOW_TRACKING_URI" not in os.environ:
        raise RuntimeError("set ui_state.environment(home) first")
    db = home / "demo" / "production.sqlite"
    source_db.create(db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE customers SET churn_label = 7 WHERE customer_id = "
                     "(SELECT min(customer_id) FROM customers WHERE signup_date = ?)", (FAILING_DAY,))
    catalog = load_catalog(DEMO_CATALOG)
    storage = os.environ["SNAPSHOT_PLATFORM_STORAGE_URL"]
    assets, resources = build_assets(catalog), build_resources(storage)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.get() as instance:
        for pk in [*DAYS, FAILING_DAY]:
            materialize(assets, selection=[snapshot_key(SNAPSHOT)], partition_key=pk, instance=instance,
                        resources=resources, run_config=quiet, raise_on_error=False)
        result = materialize(assets, selection=[model_key("churn")], partition_key=DAYS[-1], instance=instance,
                             resources=resources, run_config=quiet)
    md = next(ev.event_specific_data.materialization.metadata for ev in result.get_asset_materialization_events()
              if ev.event_specific_data.materialization.asset_key == model_key("churn"))
    store = SnapshotStore(storage)
    versions = {pk: store.latest(SNAPSHOT, pk).version for pk in [*DAYS, FAILING_DAY]}
    assert store.latest(SNAPSHOT, FAILING_DAY).checks[FAILED_CHECK].passed is False
    return UiState(versions, str(md["mlflow/run"].value), str(md["mlflow/run_id"].value))
