"""``make demo``: the whole flow on embedded defaults, through Dagster, in well under a minute.

Snapshot three days of a SQLite "production" database, train ``models/churn`` on them (logged to
MLflow with its lineage), let production move on, snapshot and retrain, reproduce the first model
exactly from its MLflow run id, and compare the two runs: did the model improve or did the data change?

Everything lives under ``$SNAPSHOT_PLATFORM_HOME`` (default ``~/.snapshot_platform``): the SQLite
"production" database, the snapshot storage, the Dagster home whose run history the UI shows, and
the MLflow store (``mlflow.db`` and ``mlartifacts/``; ``$MLFLOW_TRACKING_URI`` overrides).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click
from dagster import DagsterInstance

from snapshot_platform.catalog import load_catalog
from snapshot_platform.demo import source_db
from snapshot_platform.demo.launch import CodeLocationRunner
from snapshot_platform.orchestration.definitions import model_job_name, partition_groups
from snapshot_platform.orchestration.execution import EXECUTOR_ENV
from snapshot_platform.orchestration.metadata import VERSION_METADATA_KEY, model_key, snapshot_key
from snapshot_platform.home import platform_home
from snapshot_platform.store import STORAGE_ENV, SnapshotStore, default_storage_url


def _setup_environment() -> dict[str, Path]:
    home = platform_home()
    paths = {
        "home": home,
        "dagster_home": Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))),
        "demo_db": home / Path(os.environ.get("SNAPSHOT_PLATFORM_DEMO_DB") or "demo/production.sqlite"),
    }
    os.environ.setdefault(STORAGE_ENV, default_storage_url())
    paths["dagster_home"].mkdir(parents=True, exist_ok=True)
    config = paths["dagster_home"] / "dagster.yaml"
    if not config.exists():
        config.write_text("# written by the snapshot_platform demo; see deploy/ for production examples\n"
                          "telemetry:\n  enabled: false\n")
    return paths


_QUIET = {"on": False}


def _say(text: str = "") -> None:
    if not _QUIET["on"]:
        click.echo(text)


def run_demo(fresh: bool = False, as_json: bool = False) -> dict[str, Any]:
    """Run the demo; print the story (or nothing, with ``as_json``) and return a summary.

    Fails (ClickException) when the first model cannot be reproduced exactly.
    """
    _QUIET["on"] = as_json
    paths = _setup_environment()
    storage_url = os.environ[STORAGE_ENV]
    catalog = load_catalog()
    name = "customer_data"
    if name not in catalog.snapshots:
        raise click.ClickException(f"the demo needs the demo catalog; {catalog.path} has no {name!r}")
    db = paths["demo_db"]
    if fresh and db.exists():
        db.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    if db.exists():
        change = source_db.evolve(db)
        _say(f"source database {db}: moved on since the last demo ({change})")
    else:
        source_db.create(db)
        _say(f"source database {db}: created")

    # every run goes through the code location's named jobs (snapshots_daily, models_churn): the
    # UI shows them by job and can re-execute them (demo/launch.py)
    runner = CodeLocationRunner(DagsterInstance.get())
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    if not os.environ.get(EXECUTOR_ENV):  # Dagster's default executor: the steps in this process
        run_config["execution"] = {"config": {"in_process": {}}}
    snapshot_job = next(job for job, (_, names) in partition_groups(catalog).items() if name in names)
    store = SnapshotStore(storage_url)
    key = snapshot_key(name)

    def materialization(job: str, pk: str, asset_key: Any) -> Any:
        result = runner.run(job, pk, tags={"snapshot_platform/demo": "true"}, run_config=run_config)
        if not result.success:
            raise click.ClickException(f"the Dagster run {result.run_id} ({job}, {pk}) failed: see it in the UI")
        return next(
            ev.event_specific_data.materialization.metadata
            for ev in result.all_events
            if ev.event_type_value == "ASSET_MATERIALIZATION"
            and ev.event_specific_data.materialization.asset_key == asset_key
        )

    def snap(pk: str) -> tuple[str, bool, int]:
        md = materialization(snapshot_job, pk, key)
        return (str(md[VERSION_METADATA_KEY].value), bool(md["snapshot/new_version"].value),
                int(md["dagster/row_count"].value))

    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    _say("\n1. Snapshot three daily partitions through Dagster")
    first: dict[str, str] = {}
    for pk in days:
        version, new, rows = snap(pk)
        first[pk] = version
        _say(f"   {name}/{pk}: version {version}  {rows} rows  {'new' if new else 'already published'}")

    _say("\n2. Re-run an unchanged partition: the same content is the same version, nothing is written")
    version, new, _ = snap(days[0])
    _say(f"   {name}/{days[0]}: version {version}  new version: {new}")

    model = "churn"
    mkey = model_key(model)
    if model not in catalog.models:
        raise click.ClickException(f"the demo needs the demo catalog; {catalog.path} has no model {model!r}")
    import mlflow  # noqa: F401  (MLflow configures its loggers on import: quiet them afterwards)

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def fit(pk: str) -> dict[str, Any]:
        md = materialization(model_job_name(model), pk, mkey)
        return {k: v.value for k, v in md.items()}

    def show_metrics(md: dict[str, Any]) -> str:
        return ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in md.items() if k.startswith("metric/"))

    train_pk = days[-1]
    spec = catalog.models[model]
    _say(f"\n3. Train models/{model} for {train_pk} on the {spec.partitions} snapshots ending with it, "
         "logged to MLflow")
    first_run = fit(train_pk)
    run_a = first_run["mlflow/run"]  # the bare id ("mlflow/run_id" is a link when there is an MLflow UI)
    _say(f"   MLflow run {run_a}: {show_metrics(first_run)}")
    _say(f"   registered model: {first_run['mlflow/registered_model']} ({first_run['mlflow/model_format']} format)")
    for pk, v in first_run["snapshot/versions"].items():
        _say(f"   lineage: dataset input {name}/{pk}, digest {v} (the snapshot version id)")

    _say("\n4. Production moves on: churn labels change for customers who signed up on 2024-01-02")
    change = source_db.evolve(db)
    _say(f"   {change}")
    for pk in days:
        version, new, rows = snap(pk)
        _say(f"   {name}/{pk}: version {version}  {rows} rows  {'NEW version' if new else 'unchanged'}")
    versions = [m.version for m in store.versions(name, days[1])]
    _say(f"   published versions of {days[1]}, oldest first: {', '.join(versions)}")
    old = store.read_table(name, days[1], first[days[1]])
    _say(f"   the earlier version {first[days[1]]} is intact and loadable: {old.num_rows} rows, hash-verified")

    _say(f"\n5. Retrain models/{model} for {train_pk} on the new data")
    second_run = fit(train_pk)
    run_b = second_run["mlflow/run"]
    _say(f"   MLflow run {run_b}: {show_metrics(second_run)}")

    from snapshot_platform.training.compare import compare_runs
    from snapshot_platform.training.mlflow_logging import MlflowTracking
    from snapshot_platform.training.reproduce import reproduce_run

    tracking = MlflowTracking()
    _say("\n6. Reproduce the first run from its run id alone (the database has changed since)")
    report = reproduce_run(run_a, tracking, store)
    for k, m in report.metrics.items():
        _say(f"   {k:<10} recorded {m.recorded!r:<20} reproduced {m.reproduced!r:<20} "
             f"{'identical' if m.identical else 'DIFFERS'}")
    _say(f"   test predictions {'identical' if report.predictions.identical else 'DIFFER'}; "
         f"{'REPRODUCED' if report.identical else 'NOT REPRODUCED'}")

    _say("\n7. Compare the two runs: did the model improve, or did the data change?")
    cmp = compare_runs(run_a, run_b, tracking, store)
    for k, m in cmp.metrics.items():
        _say(f"   {k:<10} {m.a:.4f} → {m.b:.4f}  ({m.delta:+.4f})")
    for p in cmp.data:
        d = p.diff
        if d is None:
            _say(f"   {p.asset}/{p.partition}: cannot diff: {p.error}")
        elif d.same_version:
            _say(f"   {d.asset}/{d.partition}: same version {d.version_a}")
        else:
            cols = ", ".join(f"{c} {n}" for c, n in d.changed_by_column.items())
            _say(f"   {d.asset}/{d.partition}: {d.version_a} → {d.version_b}: "
                 f"{d.rows_added} added, {d.rows_removed} removed, {d.rows_changed} changed"
                 + (f" ({cols})" if cols else ""))
    _say(f"   verdict: {cmp.verdict.text}")

    _say("\nWhere everything is")
    _say(f"   source database   {db}")
    _say(f"   snapshots         {storage_url}")
    _say(f"   Dagster home      {paths['dagster_home']}")
    _say(f"   MLflow            {tracking.tracking_uri}")
    _say("\nNext")
    _say(f"   snapshot-platform list {name}            # every version of every partition")
    _say(f"   snapshot-platform show {name} {days[1]}   # a manifest")
    _say("   snapshot-platform verify                    # re-hash everything")
    _say(f"   snapshot-platform reproduce {run_a}   # retrain the first model exactly")
    _say(f"   snapshot-platform compare {run_a} {run_b}")
    _say(f"   snapshot-platform diff {name} {days[1]} --from {first[days[1]]}")
    _say(f"   mlflow ui --backend-store-uri {tracking.tracking_uri}   # runs, lineage, registered models")
    _say("   make ui                                     # the Dagster UI on http://127.0.0.1:3000")
    summary = {
        "paths": {"source_database": str(db), "storage": storage_url,
                  "dagster_home": str(paths["dagster_home"]), "mlflow": tracking.tracking_uri},
        "snapshot": name,
        "versions": {pk: [m.version for m in store.versions(name, pk)] for pk in days},
        "runs": {"first": run_a, "second": run_b},
        "reproduced": bool(report.identical),
        "comparison": cmp.as_dict(),
    }
    if not report.identical:
        raise click.ClickException(f"the first model (MLflow run {run_a}) was not reproduced exactly")
    return summary
