"""One time-partitioned training asset ``models/<name>`` per catalog ``models:`` entry.

The asset has its snapshot's partitions. Model partition P depends on the ``partitions`` snapshot
partitions ending with P (a ``TimeWindowPartitionMapping``), declared as a dependency rather than an
input: the asset resolves each upstream partition to one exact version and loads it through the
store itself, so the version it records is the version it read. For each partition, in order:

1. a version pinned in run config (``pinned_versions: {partition: version}``);
2. the version the partition's latest Dagster materialization recorded;
3. the latest version published in storage (an ephemeral or lost Dagster instance)

(decided in one place for every downstream asset: ``orchestration/versions.py``).

Every version must pass the training gate (its blocking checks), unless the run config gives
``allow_failed_checks_reason``, which is then logged with the run.

Each model carries an automation condition (``retrain_condition``): once the
``default_automation_condition_sensor`` is switched on in the UI (it ships stopped), a model
partition trains when its snapshots get a new version whose blocking checks passed.
"""


import hashlib

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    asset,
)
from pydantic import Field

from snapshot_platform.catalog import Catalog, ModelSpec
from snapshot_platform.gate import UntrainableSnapshot
from snapshot_platform.orchestration.metadata import MODEL_PREFIX, model_key, snapshot_key, training_metadata
from snapshot_platform.orchestration.partitions import partitions_def
from snapshot_platform.orchestration.resources import MlflowResource, SnapshotStoreResource
from snapshot_platform.orchestration.versions import resolve_versions
from snapshot_platform.store import IntegrityError
from snapshot_platform.training.mlflow_logging import TAG_DAGSTER_ASSET, TAG_DAGSTER_PARTITION, TAG_DAGSTER_RUN
from snapshot_platform.training.train import TrainingError, code_version, train


class TrainingConfig(Config):
    """Run config of a training asset."""

    pinned_versions: dict[str, str] = Field(
        default_factory=dict,
        description="snapshot partition key → version id to train on, instead of the latest",
    )
    allow_failed_checks_reason: str | None = Field(
        default=None,
        description="train even on versions that failed a blocking check; the reason is logged with the run",
    )


def training_partitions(spec: ModelSpec, pdef: TimeWindowPartitionsDefinition, partition_key: str) -> list[str]:
    """The snapshot partitions model partition ``partition_key`` trains on, oldest first."""
    mapping = TimeWindowPartitionMapping(start_offset=-(spec.partitions - 1))
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        pdef.subset_with_partition_keys([partition_key]), pdef, pdef
    )
    keys = sorted(result.partitions_subset.get_partition_keys(),
                  key=lambda k: pdef.time_window_for_partition_key(k).start)
    if len(keys) < spec.partitions:
        all_keys = pdef.get_partition_keys()
        first_ok = all_keys[spec.partitions - 1] if len(all_keys) >= spec.partitions else None
        raise Failure(
            description=(
                f"model partition {partition_key} trains on the {spec.partitions} snapshot partitions ending "
                f"with it, but only {len(keys)} exist ({', '.join(keys)}); the first partition with enough "
                f"history is {first_ok}"
            )
        )
    return keys


def retrain_condition() -> AutomationCondition:
    """Dagster's ``eager`` condition, triggered by a new snapshot *version* rather than by any new
    materialization (re-snapshotting unchanged data gives the same version, which trains nothing new),
    and held back while *any* snapshot partition in the model partition's window has a failed
    blocking check.

    Not ``all_deps_blocking_checks_passed()``: through a window partition mapping, Dagster's
    ``all_deps_match`` holds when *some* upstream partition of each dependency matches, so a failed
    partition in the middle of a window would not hold the model back (and the run would then fail
    on the training gate). ``any_deps_match`` of a failure, negated, holds only when no partition of
    the window failed. It relies on check results recorded per partition (``AssetCheckSpec(
    partitions_def=...)`` in orchestration/snapshot_assets.py).

    Like ``eager``: only the latest partition, never while a snapshot partition is missing or being
    written, at most once per change.
    """
    new_version = AutomationCondition.any_deps_match(AutomationCondition.data_version_changed())
    failed = AutomationCondition.any_checks_match(
        AutomationCondition.check_failed() & ~AutomationCondition.will_be_requested(), blocking_only=True
    ).with_label("a_blocking_check_failed")
    return (
        AutomationCondition.eager().replace("any_deps_updated", new_version.with_label("any_snapshot_new_version"))
        & ~AutomationCondition.any_deps_match(failed).with_label("any_snapshot_partition_failed_a_blocking_check")
    ).with_label("retrain_on_new_snapshot_version")


def build_model_asset(catalog: Catalog, name: str, spec: ModelSpec) -> AssetsDefinition:
    snap = catalog.snapshots[spec.snapshot]
    pdef = partitions_def(snap.partitions)
    description = spec.description or (
        f"{spec.estimator.class_path.rsplit('.', 1)[-1]} predicting {spec.target} from snapshots/{spec.snapshot} "
        f"({spec.partitions} partition{'s' if spec.partitions > 1 else ''} ending with the model's)"
    )

    @asset(
        key=model_key(name),
        description=description,
        partitions_def=pdef,
        deps=[AssetDep(snapshot_key(spec.snapshot),
                       partition_mapping=TimeWindowPartitionMapping(start_offset=-(spec.partitions - 1)))],
        code_version=code_version(spec),
        kinds={"scikitlearn", "mlflow"},
        tags=dict(spec.tags),
        owners=list(spec.owners) or None,
        group_name=MODEL_PREFIX,
        automation_condition=retrain_condition(),
        metadata={
            "snapshot": spec.snapshot,
            "features": ", ".join(spec.features),
            "target": spec.target,
            "estimator": spec.estimator.class_path,
            "training_partitions": spec.partitions,
        },
    )
    def _model(
        context: AssetExecutionContext,
        config: TrainingConfig,
        snapshot_store: SnapshotStoreResource,
        mlflow: MlflowResource,
    ) -> MaterializeResult:
        pk = context.partition_key
        store = snapshot_store.get_store()
        partitions = training_partitions(spec, pdef, pk)
        manifests, how = resolve_versions(context.instance, store, spec.snapshot, partitions,
                                          dict(config.pinned_versions))
        for m in manifests:
            context.log.info(f"training on {m.where} ({m.row_count} rows, {how[m.partition]})")
        try:
            result = train(name, spec, manifests, store, key=snap.key,
                           override_reason=config.allow_failed_checks_reason)
        except (UntrainableSnapshot, TrainingError, IntegrityError) as exc:
            raise Failure(description=str(exc)) from None
        if result.checks_overridden:
            context.log.warning(f"trained despite failed blocking checks {result.checks_overridden}: "
                                f"{result.override_reason}")
        tracking = mlflow.tracking()
        logged = tracking.log_training(
            result, store, model_partition=pk,
            extra_tags={TAG_DAGSTER_RUN: context.run_id, TAG_DAGSTER_ASSET: model_key(name).to_user_string(),
                        TAG_DAGSTER_PARTITION: pk},
        )
        context.log.info(
            f"MLflow run {logged.run_id}: {', '.join(f'{k} {v:.4f}' for k, v in result.metrics.items())}; "
            f"registered {name} version {logged.registered_model_version}"
        )
        promotion = None
        if spec.promote is not None:  # through the same gate as `snapshot-platform promote`
            from snapshot_platform.training.promote import CannotPromote, promote_run

            try:
                report = promote_run(logged.run_id, spec.promote.alias, tracking, store,
                                     metric=spec.promote.metric, primary_metric=spec.primary_metric)
                promotion = report.message
            except CannotPromote as exc:
                promotion = f"not promoted: {exc}"
            (context.log.info if promotion and not promotion.startswith(("refused", "not promoted"))
             else context.log.warning)(promotion)
        versions = {m.partition: m.version for m in manifests}
        data_version = hashlib.sha256(
            (result.code_version + "".join(f"{p}={v};" for p, v in versions.items())).encode()
        ).hexdigest()[:20]
        return MaterializeResult(
            metadata={**training_metadata(name, result, logged, versions, how),
                      **({"mlflow/promotion": promotion} if promotion else {})},
            data_version=DataVersion(data_version),
        )

    return _model


def build_model_assets(catalog: Catalog) -> list[AssetsDefinition]:
    return [build_model_asset(catalog, name, spec) for name, spec in catalog.models.items()]
