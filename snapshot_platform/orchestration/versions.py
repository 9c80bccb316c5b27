"""The one place that decides which version of a snapshot partition a downstream asset reads.

For each upstream partition, in order:

1. a version pinned in the run's config (a training asset's ``pinned_versions``);
2. the version the partition's latest Dagster materialization recorded (``snapshot/version``);
3. the latest version published in storage (an ephemeral or lost Dagster instance).

The IO manager (inputs of downstream assets) and the training assets both ask :func:`choose_version`,
so both read the same version for the same partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dagster import AssetKey, AssetRecordsFilter, Failure

from snapshot_platform.orchestration.metadata import VERSION_METADATA_KEY, snapshot_key
from snapshot_platform.store import Manifest, ManifestError, SnapshotNotFound, SnapshotStore

PINNED = "pinned"
RECORDED = "dagster"
LATEST = "latest in storage"


@dataclass(frozen=True)
class VersionChoice:
    """The version to read (None: the latest in storage) and how it was chosen (pinned / dagster / latest)."""

    version: str | None
    how: str


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


def choose_version(
    instance: Any, asset_key: AssetKey, partition: str, pinned: Mapping[str, str] | None = None
) -> VersionChoice:
    """Which version of ``asset_key``/``partition`` to read: pinned, else recorded by Dagster, else the latest."""
    if pinned and partition in pinned:
        return VersionChoice(pinned[partition], PINNED)
    version = recorded_version(instance, asset_key, partition)
    return VersionChoice(version, RECORDED) if version else VersionChoice(None, LATEST)


def resolve_versions(
    instance: Any, store: SnapshotStore, snapshot: str, partitions: list[str], pinned: dict[str, str]
) -> tuple[list[Manifest], dict[str, str]]:
    """Each partition's manifest (chosen by :func:`choose_version`), and how each was chosen.

    Raises a Dagster ``Failure`` naming the cause when a pin names a partition outside ``partitions``,
    a version is missing, or its manifest cannot be trusted.
    """
    unknown = sorted(set(pinned) - set(partitions))
    if unknown:
        raise Failure(description=(
            f"pinned_versions names partitions this run does not train on: {', '.join(unknown)} "
            f"(it trains on {', '.join(partitions)})"
        ))
    manifests, how = [], {}
    for pk in partitions:
        choice = choose_version(instance, snapshot_key(snapshot), pk, pinned)
        how[pk] = choice.how
        try:
            manifests.append(store.read_manifest(snapshot, pk, choice.version))
        except SnapshotNotFound as exc:
            raise Failure(description=f"{exc}; materialize snapshots/{snapshot} for {pk} first") from None
        except ManifestError as exc:  # malformed, or not describing its own folder
            raise Failure(description=f"{snapshot}/{pk}: the version cannot be trusted: {exc}") from None
    return manifests, how
