"""The IO manager that loads snapshot partitions for downstream assets, hash-verified."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import ConfigurableIOManager, InputContext, OutputContext

from snapshot_platform.orchestration.resources import SnapshotStoreResource
from snapshot_platform.orchestration.versions import choose_version

IO_MANAGER_KEY = "snapshot_io_manager"


class SnapshotIOManager(ConfigurableIOManager):
    """Loads snapshot partitions for downstream assets, hash-verified.

    For each upstream partition it loads the version :func:`~snapshot_platform.orchestration.versions.choose_version`
    picks: the one recorded by the partition's latest materialization, or, when the Dagster instance
    has none (an ephemeral instance, a lost database), the latest version published in storage. A
    window of partitions comes back as one DataFrame (or one Arrow table when the input is annotated
    ``pa.Table``), partition by partition in key order, with a ``_partition`` column naming each row's
    partition.
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
            choice = choose_version(context.instance, asset_key, pk)
            table = store.read_table(name, pk, choice.version)
            tables.append(table.append_column("_partition", pa.array([pk] * table.num_rows, pa.string())))
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        if context.dagster_type.typing_type is pa.Table:
            return table
        return table.to_pandas()
