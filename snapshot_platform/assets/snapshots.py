"""One time-partitioned asset ``snapshots/<name>`` per catalog entry."""


import warnings
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BetaWarning,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from snapshot_platform.catalog import Catalog, SnapshotSpec
from snapshot_platform.checks import check_defs
from snapshot_platform.partitions import partitions_def
from snapshot_platform.resources import VERSION_METADATA_KEY, SnapshotStoreResource
from snapshot_platform.snapshotter import SnapshotOutcome, code_version, take_snapshot
from snapshot_platform.source_resources import (
    SourceResource,
    ensure_pool_limit,
    source_resource_key,
    source_resources,
)
from snapshot_platform.source_resources import source_resource as make_source_resource
from snapshot_platform.sources import Window

# each snapshot asset carries its source's resource (resource_defs, "beta" in Dagster 1.13)
warnings.filterwarnings("ignore", message=r"Parameter `resource_defs` of function `asset`", category=BetaWarning)

SNAPSHOT_PREFIX = "snapshots"
IO_MANAGER_KEY = "snapshot_io_manager"


def snapshot_key(name: str) -> AssetKey:
    return AssetKey([SNAPSHOT_PREFIX, name])


def source_pool(source: str) -> str:
    """The Dagster concurrency pool that bounds concurrent queries against one source."""
    return f"source_{source}"


def snapshot_metadata(outcome: SnapshotOutcome) -> dict[str, Any]:
    m = outcome.result.manifest
    return {
        "dagster/row_count": m["row_count"],
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=c["name"], type=c["type"]) for c in m["schema"]]
        ),
        "dagster/uri": outcome.result.uri,
        VERSION_METADATA_KEY: m["version"],
        "snapshot/new_version": outcome.result.created,
        "snapshot/files": MetadataValue.json(m["files"]),
        "snapshot/query": MetadataValue.md(f"```sql\n{m['query'].strip()}\n```"),
        "snapshot/query_sha256": m["query_sha256"],
        "snapshot/params": MetadataValue.json(m["params"]),
        "snapshot/source": MetadataValue.json(m["source"]),
        "snapshot/source_state": MetadataValue.json(m["source_state"]),
        "snapshot/created_at": m["created_at"],
        "snapshot/duration_s": round(outcome.seconds, 3),
        "snapshot/rows_per_s": round(outcome.rows_per_second, 1),
        "snapshot/attempts": outcome.attempts,
    }


def check_results(name: str, outcome: SnapshotOutcome) -> list[AssetCheckResult]:
    """The manifest's recorded check outcomes, as Dagster asset check results."""
    results = []
    for check_name, c in outcome.checks.items():
        details = c.get("details", {})
        results.append(AssetCheckResult(
            asset_key=snapshot_key(name),
            check_name=check_name,
            passed=bool(c["passed"]),
            severity=AssetCheckSeverity.ERROR if c.get("severity") == "ERROR" else AssetCheckSeverity.WARN,
            metadata={
                "details": MetadataValue.json(details),
                "snapshot/version": outcome.result.version,
                **{k: v for k, v in details.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            },
        ))
    return results


def build_snapshot_asset(
    catalog: Catalog, name: str, spec: SnapshotSpec, source_resource: SourceResource | None = None
) -> AssetsDefinition:
    source_kind = catalog.sources[spec.source].kind
    source_key = source_resource_key(spec.source)
    if source_resource is None:
        source_resource = make_source_resource(spec.source, catalog.sources[spec.source])
    max_queries = catalog.sources[spec.source].max_concurrent_queries
    description = spec.description or f"Snapshot of the {spec.source} query {name}"

    pdef = partitions_def(spec.partitions)

    @asset(
        key=snapshot_key(name),
        description=description,
        partitions_def=pdef,
        code_version=code_version(spec),
        kinds={source_kind, "parquet"},
        tags=dict(spec.tags),
        owners=list(spec.owners) or None,
        group_name=SNAPSHOT_PREFIX,
        io_manager_key=IO_MANAGER_KEY,
        pool=source_pool(spec.source),
        # the source is a resource of its own (one shared object per source, see build_snapshot_assets)
        resource_defs={source_key: source_resource},
        required_resource_keys={"snapshot_store"},
        check_specs=[
            # partitions_def: Dagster records each result under the run's partition (without it, 1.13
            # records the planned check under the partition and the result under none: the UI shows a
            # 'skipped' row beside every result, and automation cannot tell which partition failed)
            AssetCheckSpec(d.name, asset=snapshot_key(name), blocking=d.blocking, description=d.description,
                           partitions_def=pdef)
            for d in check_defs(spec)
        ],
        metadata={
            "query": MetadataValue.md(f"```sql\n{spec.query.strip()}\n```"),
            "key": ", ".join(spec.key),
            "source": spec.source,
            "cadence": spec.partitions.cadence,
        },
    )
    def _snapshot(context: AssetExecutionContext) -> MaterializeResult:
        snapshot_store: SnapshotStoreResource = context.resources.snapshot_store
        try:  # max_concurrent_queries is the pool's limit: correct it if the instance has another
            if ensure_pool_limit(context.instance, source_pool(spec.source), max_queries):
                context.log.info(f"pool {source_pool(spec.source)}: limit set to {max_queries} (max_concurrent_queries)")
        except Exception as exc:  # never fail a snapshot over this; the pool keeps its current limit
            context.log.warning(f"pool {source_pool(spec.source)}: could not set its limit: {type(exc).__name__}")
        if getattr(catalog.sources[spec.source], "allow_privileged_role", False):
            context.log.warning(
                f"source {spec.source}: allow_privileged_role is true, so it may read as a superuser or a role "
                "that can write; the read-only session is then the only guard (the source's state records it)"
            )
        tw = context.partition_time_window
        outcome = take_snapshot(
            catalog,
            name,
            context.partition_key,
            snapshot_store.get_store(),
            dagster_run_id=context.run_id,
            window=Window(tw.start, tw.end),
            source=getattr(context.resources, source_key).get_source(),
        )
        m = outcome.result.manifest
        if outcome.result.created:
            context.log.info(
                f"published {name}/{context.partition_key} version {m['version']}: "
                f"{m['row_count']} rows in {outcome.seconds:.1f}s"
            )
        else:
            context.log.info(
                f"{name}/{context.partition_key}: the source returned the same data as published "
                f"version {m['version']}; nothing new was written"
            )
        failed = [n for n, c in outcome.checks.items() if not c["passed"]]
        if failed:
            context.log.warning(f"{name}/{context.partition_key} version {m['version']}: checks failed: {', '.join(failed)}")
        return MaterializeResult(
            metadata=snapshot_metadata(outcome),
            data_version=DataVersion(m["version"]),
            check_results=check_results(name, outcome),
        )

    return _snapshot


def build_snapshot_assets(catalog: Catalog) -> list[AssetsDefinition]:
    resources = source_resources(catalog)  # one object per source: Dagster compares them by identity
    return [
        build_snapshot_asset(catalog, name, spec, resources[source_resource_key(spec.source)])
        for name, spec in catalog.snapshots.items()
    ]
