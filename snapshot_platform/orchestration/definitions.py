"""The Dagster definitions: one snapshot asset per catalog entry, the models, schedules, resources.

The catalog is read and validated here, so a bad catalog fails the code location's load with the
file, entry and field named. ``snapshot_platform/definitions.py`` is the entry point that calls
:func:`build_definitions`.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections import Counter
from typing import Any, Iterator

from dagster import (
    AssetSelection,
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    define_asset_job,
    partition_loading_context,
)

from snapshot_platform.catalog import Catalog, PartitionsSpec, load_catalog
from snapshot_platform.catalog.loading import collector_paused
from snapshot_platform.orchestration.change_sensors import build_change_sensors
from snapshot_platform.orchestration.execution import executor_from_environment
from snapshot_platform.orchestration.io_manager import IO_MANAGER_KEY, SnapshotIOManager
from snapshot_platform.orchestration.metadata import SNAPSHOT_PREFIX, model_key, snapshot_key
from snapshot_platform.orchestration.model_assets import build_model_assets
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform.orchestration.resources import (
    MLFLOW_RESOURCE_KEY,
    SNAPSHOT_STORE_RESOURCE_KEY,
    MlflowResource,
    SnapshotStoreResource,
)
from snapshot_platform.orchestration.snapshot_assets import build_snapshot_assets


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d") if (t.hour, t.minute, t.second) == (0, 0, 0) else t.strftime("%Y%m%dT%H%M%S")


def partition_groups(catalog: Catalog) -> dict[str, tuple[PartitionsSpec, list[str]]]:
    """Job name → (partitions, snapshot names): one group per partitions definition (cadence, start, end).

    The name is ``snapshots_<cadence>``; when several groups share a cadence, each is told apart by
    its start (and end): ``snapshots_daily_from_20240101``, ``snapshots_daily_from_20240101_to_20241231``.
    """
    groups: dict[tuple[str, dt.datetime, dt.datetime | None], tuple[PartitionsSpec, list[str]]] = {}
    for name, spec in catalog.snapshots.items():
        p = spec.partitions
        groups.setdefault((p.cadence, p.start, p.end), (p, []))[1].append(name)
    per_cadence = Counter(cadence for cadence, _, _ in groups)
    named = {}
    for (cadence, start, end), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or dt.datetime.max)):
        job = f"{SNAPSHOT_PREFIX}_{cadence}"
        if per_cadence[cadence] > 1:
            job += f"_from_{_stamp(start)}" + (f"_to_{_stamp(end)}" if end is not None else "")
        named[job] = group
    return named


def snapshot_run_requests(
    names: list[str], pdef: TimeWindowPartitionsDefinition, scheduled: dt.datetime | None
) -> list[RunRequest] | SkipReason:
    """One run per snapshot, for the last partition completed at ``scheduled``; the run key makes a tick idempotent."""
    with partition_loading_context(effective_dt=scheduled or dt.datetime.now(dt.timezone.utc)):
        partition_key = pdef.get_last_partition_key()
    if partition_key is None:
        return SkipReason("no partition has completed yet")
    return [
        RunRequest(run_key=f"{name}:{partition_key}", asset_selection=[snapshot_key(name)], partition_key=partition_key)
        for name in names
    ]


def build_schedules(catalog: Catalog) -> list[ScheduleDefinition]:
    """One asset job and one schedule per partitions definition, not per snapshot.

    Each schedule (stopped until switched on) requests one run per snapshot of its group, so a run is
    one snapshot, as its source's pool expects. One job per group keeps loading the code location
    linear in the catalog: a job per snapshot is resolved against the whole asset graph, each.
    """
    schedules = []
    for job_name, (partitions, names) in partition_groups(catalog).items():
        pdef = partitions_def(partitions)
        job = define_asset_job(job_name, selection=AssetSelection.assets(*(snapshot_key(n) for n in names)),
                               partitions_def=pdef)

        def evaluate(context: ScheduleEvaluationContext, names: list[str] = names,
                     pdef: TimeWindowPartitionsDefinition = pdef) -> Iterator[RunRequest | SkipReason]:
            requests = snapshot_run_requests(names, pdef, context.scheduled_execution_time)
            yield from requests if isinstance(requests, list) else [requests]

        schedules.append(ScheduleDefinition(
            name=f"{job_name}_schedule",
            cron_schedule=pdef.get_cron_schedule(),
            execution_timezone="UTC",
            job=job,
            execution_fn=evaluate,
            default_status=DefaultScheduleStatus.STOPPED,
            description=f"{len(names)} {partitions.cadence} snapshot(s), one run each, for the partition that just closed",
        ))
    return schedules


def model_job_name(model: str) -> str:
    return f"models_{model}"


def build_model_jobs(catalog: Catalog) -> list[Any]:
    """One named job per model (``models_<name>``), so a training run is told apart from a snapshot
    run in the runs list and can be launched or re-executed by name (the demo runs its models so)."""
    return [define_asset_job(model_job_name(name), selection=AssetSelection.assets(model_key(name)),
                             description=f"Train models/{name} for one partition")
            for name in catalog.models]


def build_resources(storage_url: str | None = None) -> dict[str, Any]:
    store = SnapshotStoreResource(storage_url=storage_url) if storage_url else SnapshotStoreResource()
    return {
        SNAPSHOT_STORE_RESOURCE_KEY: store,
        IO_MANAGER_KEY: SnapshotIOManager(store=store),
        MLFLOW_RESOURCE_KEY: MlflowResource(),
    }


def build_assets(catalog: Catalog) -> list[AssetsDefinition]:
    """Every asset, in one place: the snapshots, then the models trained on them."""
    return [*build_snapshot_assets(catalog), *build_model_assets(catalog)]


def build_definitions(catalog: Catalog | None = None, storage_url: str | None = None) -> Definitions:
    """The code location's definitions, resolved (``get_repository_def()``, which Dagster would do
    when loading the location) while the garbage collector is paused: everything built is kept, and
    collections walking the growing heap cost a big catalog about a quarter of its load time.

    Then ``gc.freeze()``: what the process holds by then (the definitions, kept for its lifetime)
    is left out of every later collection. A code server goes on to build every job (the implicit
    asset job over every asset) and its repository snapshot with the collector running; walking the
    definitions again in each full collection made that about twice as slow at 10,000 snapshots."""
    catalog = catalog if catalog is not None else load_catalog()
    with collector_paused():
        defs = Definitions(
            assets=build_assets(catalog),
            schedules=build_schedules(catalog),
            sensors=build_change_sensors(catalog),
            jobs=build_model_jobs(catalog),
            resources=build_resources(storage_url),
            executor=executor_from_environment(),  # Celery workers when SNAPSHOT_PLATFORM_EXECUTOR=celery
        )
        defs.get_repository_def()  # cached on the object
        gc.freeze()
    return defs
