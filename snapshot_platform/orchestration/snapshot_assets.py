"""One time-partitioned asset ``snapshots/<name>`` per catalog entry."""

import os
import warnings
from typing import Any, Iterator, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindow,
    asset,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
)
from dagster._core.storage.tags import BACKFILL_ID_TAG

from snapshot_platform.capture import SnapshotOutcome, code_version, take_snapshot
from snapshot_platform.catalog import Catalog, SnapshotSpec
from snapshot_platform.checks import DRIFT_CHECK, check_defs
from snapshot_platform.drift import figures as drift_figures
from snapshot_platform.orchestration.io_manager import IO_MANAGER_KEY
from snapshot_platform.orchestration.metadata import SNAPSHOT_PREFIX, check_metadata, snapshot_key, snapshot_metadata
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform.orchestration.pools import ensure_pool_limit, source_pool
from snapshot_platform.orchestration.resources import (
    SNAPSHOT_STORE_RESOURCE_KEY,
    SnapshotStoreResource,
    SourceResource,
    source_resource_key,
    source_resources,
)
from snapshot_platform.orchestration.resources import source_resource as make_source_resource
from snapshot_platform.sources import Window

# each snapshot asset carries its source's resource (resource_defs, "beta" in Dagster 1.13)
warnings.filterwarnings("ignore", message=r"Parameter `resource_defs` of function `asset`", category=BetaWarning)


def check_results(name: str, outcome: SnapshotOutcome) -> list[AssetCheckResult]:
    """The manifest's recorded check outcomes, as Dagster asset check results."""
    results = []
    for check_name, c in outcome.checks.items():
        details = c.details if "details" in c.as_dict() else {}
        results.append(AssetCheckResult(
            asset_key=snapshot_key(name),
            check_name=check_name,
            passed=bool(c.passed),
            severity=AssetCheckSeverity.ERROR if c.severity == "ERROR" else AssetCheckSeverity.WARN,
            metadata={**check_metadata(outcome.result.version, details),
                      # the drift check's per-column figures as floats: the UI plots them over partitions
                      **({f"drift/{col}": MetadataValue.float(v) for col, v in drift_figures(details).items()}
                         if check_name == DRIFT_CHECK else {})},
        ))
    return results


def check_evaluations(context: AssetExecutionContext, name: str, partition_key: str, outcome: SnapshotOutcome,
                      blocking: Mapping[str, bool]) -> Iterator[AssetCheckEvaluation]:
    """One partition's check results in a ranged run, each recorded under its own partition.

    What Dagster derives from an ``AssetCheckResult`` in a one-partition run (the partition, the
    materialization checked), given explicitly: a ranged run has no single partition. Call it right
    after the partition's materialization was reported, so that it is the one the results point at.
    """
    record = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=snapshot_key(name), asset_partitions=[partition_key]), limit=1
    ).records
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=record[0].storage_id, run_id=record[0].run_id, timestamp=record[0].timestamp
    ) if record else None
    for r in check_results(name, outcome):
        yield AssetCheckEvaluation(
            asset_key=snapshot_key(name), check_name=r.check_name, passed=r.passed, metadata=r.metadata,
            target_materialization_data=target, severity=r.severity,
            blocking=blocking.get(r.check_name, False),
            partition=partition_key,
        )


BACKFILL_PARTITIONS_ENV = "SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN"
DEFAULT_BACKFILL_PARTITIONS_PER_RUN = 30


def backfill_policy() -> BackfillPolicy:
    """A backfill of a snapshot asset runs up to N partitions per run, one after another in one step
    (N: ``$SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN``, default 30; 1 gives a run per partition)."""
    raw = os.environ.get(BACKFILL_PARTITIONS_ENV, "").strip()
    try:
        n = int(raw) if raw else DEFAULT_BACKFILL_PARTITIONS_PER_RUN
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{BACKFILL_PARTITIONS_ENV}={raw!r}: expected a whole number of partitions, at least 1")
    return BackfillPolicy.multi_run(max_partitions_per_run=n)


class SnapshotRunConfig(Config):
    """A snapshot run's config (all optional)."""

    accept_late: bool = False
    """mode: as_of: publish a read taken more than max_lag after the partition's end (late: true)
    instead of refusing it."""


RUN_CONFIG_SCHEMA = SnapshotRunConfig.to_config_schema()

PROGRESS_INTERVAL_ENV = "SNAPSHOT_PLATFORM_PROGRESS_SECONDS"


class ProgressLog:
    """``take_snapshot``'s progress callback in a Dagster step: logs rows, rows/s, bytes and the
    elapsed time to the run's event log at most every ``interval`` seconds (env
    ``SNAPSHOT_PLATFORM_PROGRESS_SECONDS``, default 5; 0 logs every batch)."""

    def __init__(self, context: AssetExecutionContext, what: str, interval: float | None = None) -> None:
        import os
        import time

        self._clock = time.monotonic
        self._context, self._what = context, what
        self._interval = float(os.environ.get(PROGRESS_INTERVAL_ENV, "5")) if interval is None else interval
        self._started = self._last = self._clock()

    def __call__(self, rows: int, nbytes: int) -> None:
        now = self._clock()
        if rows == 0 or now - self._last < self._interval:
            return
        self._last = now
        elapsed = now - self._started
        rate = rows / elapsed if elapsed > 0 else 0.0
        self._context.log.info(
            f"{self._what}: {rows:,} rows read ({rate:,.0f} rows/s, {nbytes / 1e6:,.1f} MB in memory), "
            f"{elapsed:.0f}s elapsed"
        )


def build_snapshot_asset(
    catalog: Catalog, name: str, spec: SnapshotSpec, source_resource: SourceResource | None = None
) -> AssetsDefinition:
    source_kind = catalog.sources[spec.source].kind
    source_key = source_resource_key(spec.source)
    if source_resource is None:
        source_resource = make_source_resource(spec.source, catalog.sources[spec.source])
    max_queries = catalog.sources[spec.source].reads_at_once  # the pool's limit: reads, each of `parallelism` queries
    description = spec.description or f"Snapshot of the {spec.source} query {name}"

    pdef = partitions_def(spec.partitions)

    checks = check_defs(spec)
    blocking = {d.name: d.blocking for d in checks}

    def snapshot_one(context: AssetExecutionContext, config: SnapshotRunConfig, partition_key: str,
                     tw: TimeWindow) -> SnapshotOutcome:
        """Snapshot one partition (its window computed once, by the caller) and log what happened."""
        outcome = take_snapshot(
            spec,
            getattr(context.resources, source_key).get_source(),
            Window(tw.start, tw.end),
            context.resources.snapshot_store.get_store(),
            name=name,
            partition_key=partition_key,
            dagster_run_id=context.run_id,
            progress=ProgressLog(context, f"{name}/{partition_key}"),
            accept_late=config.accept_late,
        )
        m = outcome.result.manifest
        if outcome.result.created:
            context.log.info(
                f"published {name}/{partition_key} version {m.version}: "
                f"{m.row_count} rows in {outcome.seconds:.1f}s"
            )
        else:
            context.log.info(
                f"{name}/{partition_key}: the source returned the same data as published "
                f"version {m.version}; nothing new was written"
            )
        undescribed = sorted(set(spec.columns) - {c.name for c in m.schema})
        if undescribed:
            context.log.warning(f"{name}: the catalog describes columns the query does not return: "
                                f"{', '.join(undescribed)}")
        failed = [n for n, c in outcome.checks.items() if not c.passed]
        if failed:
            context.log.warning(
                f"{name}/{partition_key} version {m.version}: checks failed: {', '.join(failed)}")
        return outcome

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
        # a backfill snapshots up to this many partitions in one run, one after another (one pool slot)
        backfill_policy=backfill_policy(),
        # a ranged run reports each partition's materialization itself (AssetMaterialization events),
        # not through the output, which would give every partition of the range the same metadata
        output_required=False,
        # the run config's schema, built once (inferring it from a `config` parameter costs each asset ~1 ms)
        config_schema=RUN_CONFIG_SCHEMA,
        # the source is a resource of its own (one shared object per source, see build_snapshot_assets)
        resource_defs={source_key: source_resource},
        required_resource_keys={SNAPSHOT_STORE_RESOURCE_KEY},
        check_specs=[
            # partitions_def: Dagster records each result under the run's partition (without it, 1.13
            # records the planned check under the partition and the result under none: the UI shows a
            # 'skipped' row beside every result, and automation cannot tell which partition failed)
            AssetCheckSpec(d.name, asset=snapshot_key(name), blocking=d.blocking, description=d.description,
                           partitions_def=pdef)
            for d in checks
        ],
        metadata={
            "query": MetadataValue.md(f"```sql\n{spec.query.strip()}\n```"),
            "key": ", ".join(spec.key),
            "source": spec.source,
            "cadence": spec.partitions.cadence,
        },
    )
    def _snapshot(context: AssetExecutionContext) -> Iterator[Any]:
        config = SnapshotRunConfig(**context.op_config) if context.op_config else SnapshotRunConfig()
        snapshot_store: SnapshotStoreResource = context.resources.snapshot_store
        try:  # max_concurrent_queries is the pool's limit: correct it if the instance has another
            if ensure_pool_limit(context.instance, source_pool(spec.source), max_queries):
                context.log.info(f"pool {source_pool(spec.source)}: limit set to {max_queries} (max_concurrent_queries / parallelism)")
        except Exception as exc:  # never fail a snapshot over this; the pool keeps its current limit
            context.log.warning(f"pool {source_pool(spec.source)}: could not set its limit: {type(exc).__name__}")
        if getattr(catalog.sources[spec.source], "allow_privileged_role", False):
            context.log.warning(
                f"source {spec.source}: allow_privileged_role is true, so it may read as a superuser or a role "
                "that can write; the read-only session is then the only guard (the source's state records it)"
            )
        if context.has_partition_key:  # one partition: its window from the run's partition
            outcome = snapshot_one(context, config, context.partition_key, context.partition_time_window)
            yield MaterializeResult(
                metadata=snapshot_metadata(outcome, snapshot_store.get_store(), spec.columns),
                data_version=DataVersion(outcome.result.manifest.version),
                check_results=check_results(name, outcome),
            )
            return
        # a partition range (a backfill run): each partition in turn, each reported on its own
        keys = list(context.partition_keys)
        context.log.info(
            f"{name}: {len(keys)} partitions in this run, {keys[0]} to {keys[-1]}, one after another")
        tags = {CODE_VERSION_TAG: code_version(spec), DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
        if BACKFILL_ID_TAG in context.run.tags:  # as Dagster tags the materializations it reports
            tags[BACKFILL_ID_TAG] = context.run.tags[BACKFILL_ID_TAG]
        for i, pk in enumerate(keys):
            outcome = snapshot_one(context, config, pk, pdef.time_window_for_partition_key(pk))
            last = i == len(keys) - 1  # the table of every partition once, on the range's last one
            yield AssetMaterialization(
                asset_key=snapshot_key(name),
                partition=pk,
                metadata=snapshot_metadata(outcome, snapshot_store.get_store() if last else None,
                                           spec.columns),
                tags={**tags, DATA_VERSION_TAG: outcome.result.manifest.version},
            )
            yield from check_evaluations(context, name, pk, outcome, blocking)
        # the checks' own (empty) outputs, which an AssetCheckResult would have emitted
        for output_name in context.assets_def.check_specs_by_output_name:
            yield Output(None, output_name=output_name)

    return _snapshot


def build_snapshot_assets(catalog: Catalog) -> list[AssetsDefinition]:
    resources = source_resources(catalog)  # one object per source: Dagster compares them by identity
    return [
        build_snapshot_asset(catalog, name, spec, resources[source_resource_key(spec.source)])
        for name, spec in catalog.snapshots.items()
    ]
