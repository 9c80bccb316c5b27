"""The Dagster definitions: one snapshot asset per catalog entry, the models, schedules, resources.

The catalog is read and validated here, so a bad catalog fails the code location's load with the
file, entry and field named. ``snapshot_platform/definitions.py`` is the entry point that calls
:func:`build_definitions`.
"""

from __future__ import annotations

import warnings
from typing import Any

from dagster import (
    AssetSpec,
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    PreviewWarning,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from snapshot_platform.catalog import Catalog, load_catalog
from snapshot_platform.orchestration.io_manager import IO_MANAGER_KEY, SnapshotIOManager
from snapshot_platform.orchestration.metadata import SNAPSHOT_PREFIX, snapshot_key
from snapshot_platform.orchestration.model_assets import build_model_assets
from snapshot_platform.orchestration.partitions import freshness_policy
from snapshot_platform.orchestration.resources import (
    MLFLOW_RESOURCE_KEY,
    SNAPSHOT_STORE_RESOURCE_KEY,
    MlflowResource,
    SnapshotStoreResource,
)
from snapshot_platform.orchestration.snapshot_assets import build_snapshot_assets


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
    return {
        SNAPSHOT_STORE_RESOURCE_KEY: store,
        IO_MANAGER_KEY: SnapshotIOManager(store=store),
        MLFLOW_RESOURCE_KEY: MlflowResource(),
    }


def build_assets(catalog: Catalog) -> list[AssetsDefinition]:
    """Every asset, in one place: the snapshots, then the models trained on them."""
    return [*build_snapshot_assets(catalog), *build_model_assets(catalog)]


def with_snapshot_freshness(spec: AssetSpec) -> AssetSpec:
    """Cross-cutting policy, applied in one place: every snapshot is fresh for its cadence."""
    cadence = spec.metadata.get("cadence")
    if spec.key.path[0] != SNAPSHOT_PREFIX or cadence is None:
        return spec
    return spec.replace_attributes(freshness_policy=freshness_policy(str(cadence)))


def build_definitions(catalog: Catalog | None = None, storage_url: str | None = None) -> Definitions:
    catalog = catalog if catalog is not None else load_catalog()
    defs = Definitions(
        assets=build_assets(catalog),
        schedules=build_schedules(catalog),
        resources=build_resources(storage_url),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)  # map_resolved_asset_specs is "preview" in 1.13
        return defs.map_resolved_asset_specs(func=with_snapshot_freshness)
