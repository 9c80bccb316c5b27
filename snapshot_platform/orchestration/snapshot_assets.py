"""One time-partitioned asset ``snapshots/<name>`` per catalog entry."""

import os
import warnings
from collections import Counter
from typing import Any, Iterator, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetRecordsFilter,
    AssetSpec,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Config,
    DataVersion,
    Field,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindow,
    multi_asset,
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
from snapshot_platform.orchestration.partitions import freshness_policy, partitions_def
from snapshot_platform.orchestration.pools import ensure_pool_limit, source_pool
from snapshot_platform.orchestration.resources import (
    SNAPSHOT_STORE_RESOURCE_KEY,
    SourceResource,
    source_resource_key,
    source_resources,
)
from snapshot_platform.orchestration.resources import source_resource as make_source_resource
from snapshot_platform.sources import Window

# each snapshot op carries its source's resource (resource_defs, "beta" in Dagster 1.13)
warnings.filterwarnings("ignore", message=r"Parameter `resource_defs` of function `(multi_)?asset`",
                        category=BetaWarning)


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


# the run config's schema as a plain dict (a multi-asset takes no Config class): the same shape,
# ops: {<op>: {config: {accept_late: true}}}, built once
RUN_CONFIG_SCHEMA = {
    "accept_late": Field(bool, default_value=False, is_required=False,
                         description="mode: as_of: publish a read taken more than max_lag after the "
                         "partition's end (late: true) instead of refusing it."),
}

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


def snapshot_asset_spec(catalog: Catalog, name: str,
                        spec: SnapshotSpec) -> tuple[AssetSpec, list[AssetCheckSpec]]:
    """The asset ``snapshots/<name>`` and its checks, as Dagster specs."""
    pdef = partitions_def(spec.partitions)
    key = snapshot_key(name)
    asset_spec = AssetSpec(
        key,
        description=spec.description or f"Snapshot of the {spec.source} query {name}",
        partitions_def=pdef,
        code_version=code_version(spec),
        kinds={catalog.sources[spec.source].kind, "parquet"},
        tags=dict(spec.tags),
        owners=list(spec.owners),
        group_name=SNAPSHOT_PREFIX,
        freshness_policy=freshness_policy(spec.partitions.cadence),  # every snapshot: fresh for its cadence
        # a ranged run reports each partition's materialization itself (AssetMaterialization events),
        # not through the output, which would give every partition of the range the same metadata
        skippable=True,
        metadata={
            "query": MetadataValue.md(f"```sql\n{spec.query.strip()}\n```"),
            "key": ", ".join(spec.key),
            "source": spec.source,
            "cadence": spec.partitions.cadence,
        },
    ).with_io_manager_key(IO_MANAGER_KEY)
    # partitions_def: Dagster records each result under the run's partition (without it, 1.13 records
    # the planned check under the partition and the result under none: the UI shows a 'skipped' row
    # beside every result, and automation cannot tell which partition failed)
    checks = [AssetCheckSpec(d.name, asset=key, blocking=d.blocking, description=d.description,
                             partitions_def=pdef) for d in check_defs(spec)]
    return asset_spec, checks


def build_snapshot_pack(
    catalog: Catalog, names: list[str], op_name: str, source_resource: SourceResource | None = None
) -> AssetsDefinition:
    """The snapshot assets of ``names`` (one source, one partitions definition) as one Dagster op.

    One name gives the asset as it always was: its own op and step, ``snapshots__<name>``. Several
    (a big catalog, :func:`build_snapshot_assets`) share one op that runs the selected snapshots one
    after another in one step, holding one slot of their source's pool; each is reported on its own.
    """
    specs = {name: catalog.snapshots[name] for name in names}
    first = specs[names[0]]
    source_name, source_spec = first.source, catalog.sources[first.source]
    source_key = source_resource_key(source_name)
    if source_resource is None:
        source_resource = make_source_resource(source_name, source_spec)
    max_queries = source_spec.reads_at_once  # the pool's limit: reads, each of `parallelism` queries
    pdef = partitions_def(first.partitions)
    built = {name: snapshot_asset_spec(catalog, name, spec) for name, spec in specs.items()}
    by_key = {snapshot_key(name): name for name in names}

    @multi_asset(
        name=op_name,
        specs=[asset_spec for asset_spec, _ in built.values()],
        check_specs=[c for _, checks in built.values() for c in checks],
        can_subset=len(names) > 1,
        pool=source_pool(source_name),
        # a backfill snapshots up to this many partitions in one run, one after another (one pool slot)
        backfill_policy=backfill_policy(),
        # the run config's schema, built once (inferring it from a `config` parameter costs each op ~1 ms)
        config_schema=RUN_CONFIG_SCHEMA,
        # the source is a resource of its own (one shared object per source, see build_snapshot_assets)
        resource_defs={source_key: source_resource},
        required_resource_keys={SNAPSHOT_STORE_RESOURCE_KEY},
    )
    def _snapshots(context: AssetExecutionContext) -> Iterator[Any]:
        config = SnapshotRunConfig(**context.op_config) if context.op_config else SnapshotRunConfig()
        pool = source_pool(source_name)
        try:  # max_concurrent_queries is the pool's limit: correct it if the instance has another
            if ensure_pool_limit(context.instance, pool, max_queries):
                context.log.info(
                    f"pool {pool}: limit set to {max_queries} (max_concurrent_queries / parallelism)")
        except Exception as exc:  # never fail a snapshot over this; the pool keeps its current limit
            context.log.warning(f"pool {pool}: could not set its limit: {type(exc).__name__}")
        if getattr(source_spec, "allow_privileged_role", False):
            context.log.warning(
                f"source {source_name}: allow_privileged_role is true, so it may read as a superuser or a "
                "role that can write; the read-only session is then the only guard (the source's state "
                "records it)"
            )
        selected = [by_key[k] for k in sorted(context.selected_asset_keys, key=lambda k: k.path)
                    if k in by_key]
        errors: list[BaseException] = []
        for name in selected:
            try:
                yield from snapshot_events(context, name, specs[name], config, source_key)
            except Exception as exc:
                if len(selected) == 1:
                    raise
                context.log.error(f"{name}: {type(exc).__name__}: {exc}")  # the others still run
                errors.append(exc)
        if errors:
            raise errors[0]

    return _snapshots


def snapshot_events(context: AssetExecutionContext, name: str, spec: SnapshotSpec, config: SnapshotRunConfig,
                    source_key: str) -> Iterator[Any]:
    """Snapshot ``name`` for the run's partition, or each partition of its range, and report it."""
    key = snapshot_key(name)
    pdef = partitions_def(spec.partitions)
    store = context.resources.snapshot_store.get_store()

    def snapshot_one(partition_key: str, tw: TimeWindow) -> SnapshotOutcome:
        """Snapshot one partition (its window computed once, by the caller) and log what happened."""
        outcome = take_snapshot(
            spec,
            getattr(context.resources, source_key).get_source(),
            Window(tw.start, tw.end),
            store,
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

    if context.has_partition_key:  # one partition: its window from the run's partition
        outcome = snapshot_one(context.partition_key, context.partition_time_window)
        yield MaterializeResult(
            asset_key=key,
            metadata=snapshot_metadata(outcome, store, spec.columns),
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
    blocking = {d.name: d.blocking for d in check_defs(spec)}
    for i, pk in enumerate(keys):
        outcome = snapshot_one(pk, pdef.time_window_for_partition_key(pk))
        last = i == len(keys) - 1  # the table of every partition once, on the range's last one
        yield AssetMaterialization(
            asset_key=key,
            partition=pk,
            metadata=snapshot_metadata(outcome, store if last else None, spec.columns),
            tags={**tags, DATA_VERSION_TAG: outcome.result.manifest.version},
        )
        yield from check_evaluations(context, name, pk, outcome, blocking)
    # the checks' own (empty) outputs, which an AssetCheckResult would have emitted
    for output_name, check_spec in context.assets_def.check_specs_by_output_name.items():
        if check_spec.asset_key == key and check_spec.key in context.selected_asset_check_keys:
            yield Output(None, output_name=output_name)


PACK_SIZE = 250
"""Snapshots in one op of a big catalog (Dagster validates a multi-asset's checks quadratically)."""
PACK_ABOVE = 200
"""A source's snapshots of one partitions definition are packed when there are more than this many."""


def build_snapshot_assets(catalog: Catalog) -> list[AssetsDefinition]:
    """Every snapshot asset. Each is its own op (``snapshots__<name>``) unless its source has more
    than :data:`PACK_ABOVE` snapshots of one partitions definition: those are packed by
    :data:`PACK_SIZE` into ops ``snapshots_<source>_<cadence>_<n>`` (building a Dagster op costs a few
    milliseconds; a 10,000-snapshot catalog loads in seconds only so)."""
    resources = source_resources(catalog)  # one object per source: Dagster compares them by identity
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, spec in catalog.snapshots.items():
        p = spec.partitions
        groups.setdefault((spec.source, p.cadence, p.start, p.end), []).append(name)
    assets = []
    packs = Counter(key[0] for key, names in groups.items() if len(names) > PACK_ABOVE)
    for (source, cadence, start, end), names in groups.items():
        resource = resources[source_resource_key(source)]
        if len(names) <= PACK_ABOVE:
            assets += [build_snapshot_pack(catalog, [name], f"snapshots__{name}", resource) for name in names]
            continue
        stem = f"snapshots_{source}_{cadence}"
        if packs[source] > 1:  # several packed groups of one source: told apart by their start
            stem += f"_{start:%Y%m%d%H%M}" + (f"_{end:%Y%m%d%H%M}" if end is not None else "")
        for i in range(0, len(names), PACK_SIZE):
            assets.append(
                build_snapshot_pack(catalog, names[i:i + PACK_SIZE], f"{stem}_{i // PACK_SIZE}", resource))
    return assets
