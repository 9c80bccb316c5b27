"""The Dagster definitions: one snapshot asset per catalog entry, its schedule, resources.

Loaded by ``workspace.yaml``, ``dagster dev`` in the project root and
``dagster asset materialize -m snapshot_platform.definitions``. The catalog is read and validated
here, so a bad catalog fails the code location's load with the file, entry and field named.
"""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from snapshot_platform.assets.snapshots import IO_MANAGER_KEY, build_snapshot_assets, snapshot_key
from snapshot_platform.catalog import Catalog, load_catalog
from snapshot_platform.resources import SnapshotIOManager, SnapshotStoreResource


def build_schedules(catalog: Catalog) -> list[ScheduleDefinition]:
    schedules = []
    for name in catalog.snapshots:
        job = define_asset_job(f"snapshot_{name}", selection=[snapshot_key(name)])
        schedules.append(
            build_schedule_from_partitioned_job(
                job,
                name=f"snapshot_{name}_schedule",
                default_status=DefaultScheduleStatus.STOPPED,
            )
        )
    return schedules


def build_resources(storage_url: str | None = None) -> dict[str, Any]:
    store = SnapshotStoreResource(storage_url=storage_url) if storage_url else SnapshotStoreResource()
    return {"snapshot_store": store, IO_MANAGER_KEY: SnapshotIOManager(store=store)}


def build_assets(catalog: Catalog) -> list[AssetsDefinition]:
    return build_snapshot_assets(catalog)


def build_definitions(catalog: Catalog | None = None, storage_url: str | None = None) -> Definitions:
    catalog = catalog if catalog is not None else load_catalog()
    return Definitions(
        assets=build_assets(catalog),
        schedules=build_schedules(catalog),
        resources=build_resources(storage_url),
    )


defs = build_definitions()
