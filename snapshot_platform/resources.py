"""Dagster resources: where snapshots are stored, and the IO manager that loads pinned versions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import AssetKey, AssetRecordsFilter, ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import Field

from snapshot_platform.store import SnapshotStore, default_storage_url

VERSION_METADATA_KEY = "snapshot/version"


class SnapshotStoreResource(ConfigurableResource):
    """The snapshot store: a local path or an s3://, gs://, az:// URL (SNAPSHOT_PLATFORM_STORAGE_URL)."""

    storage_url: str = Field(
        default_factory=default_storage_url,
        description="Storage root for snapshots; default $SNAPSHOT_PLATFORM_STORAGE_URL or ~/.snapshot_platform/storage",
    )

    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the storage backend (e.g. S3 server-side encryption); no secrets here: "
        "credentials come from the environment or the machine's identity",
    )

    def get_store(self) -> SnapshotStore:
        return SnapshotStore(self.storage_url, storage_options=self.storage_options or None)


def recorded_version(instance: Any, asset_key: AssetKey, partition: str) -> str | None:
    """The version the latest materialization of ``asset_key``/``partition`` recorded, if any."""
    if instance is None:
        return None
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    )
    for record in result.records:
        value = record.asset_materialization.metadata.get(VERSION_METADATA_KEY)
        if value is not None:
            return str(value.value)
    return None


class SnapshotIOManager(ConfigurableIOManager):
    """Loads snapshot partitions for downstream assets, hash-verified.

    For each upstream partition it loads the version recorded by the partition's latest
    materialization, or, when the Dagster instance has none (an ephemeral instance, a lost
    database), the latest version published in storage. A window of partitions comes back as one
    DataFrame (or one Arrow table when the input is annotated ``pa.Table``), partition by partition
    in key order, with a ``_partition`` column naming each row's partition.
    """

    store: SnapshotStoreResource

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is not None:
            raise TypeError(
                "snapshot assets publish through the store and return MaterializeResult; "
                "the snapshot IO manager stores nothing itself"
            )

    def load_input(self, context: InputContext) -> Any:
        store = self.store.get_store()
        asset_key = context.asset_key
        name = asset_key.path[-1]
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if not partitions:
            raise ValueError(f"{asset_key.to_user_string()} is partitioned: load it with a partition mapping")
        tables = []
        for pk in partitions:
            version = recorded_version(context.instance, asset_key, pk)
            table = store.read_table(name, pk, version)
            tables.append(table.append_column("_partition", pa.array([pk] * table.num_rows, pa.string())))
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        if context.dagster_type.typing_type is pa.Table:
            return table
        return table.to_pandas()
