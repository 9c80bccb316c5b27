"""A registered model version's description and tags: the snapshot lock it learned from, and its Dagster run.

Set when a training run registers its model (training/mlflow_logging.py) and again when a version is
promoted (training/promote.py), so the model registry tells which data each version learned from.
"""

from __future__ import annotations

from typing import Any

from snapshot_platform.training.lock import SnapshotLock

TAG_DAGSTER_RUN = "dagster.run_id"
TAG_ASSETS = "snapshot_platform.lock.assets"
TAG_PARTITIONS = "snapshot_platform.lock.partitions"
TAG_ROWS = "snapshot_platform.lock.rows"


def lock_description(lock: SnapshotLock, dagster_run_id: str | None) -> str:
    """The model version's description: what it learned from, and the Dagster run that trained it."""
    lines = [f"Trained on pinned snapshot versions (snapshot_lock.json of this version's run), "
             f"{sum(e.row_count for e in lock.snapshots)} rows:", ""]
    lines += [f"- {e.asset}/{e.partition} version {e.version}: {e.row_count} rows" for e in lock.snapshots]
    lines += ["", f"Dagster run: {dagster_run_id or '(trained outside Dagster)'}"]
    return "\n".join(lines)


def lock_tags(lock: SnapshotLock, dagster_run_id: str | None) -> dict[str, str]:
    tags = {
        TAG_ASSETS: ",".join(dict.fromkeys(e.asset for e in lock.snapshots)),
        TAG_PARTITIONS: ",".join(e.partition for e in lock.snapshots),
        TAG_ROWS: ",".join(f"{e.asset}/{e.partition}@{e.version}={e.row_count}" for e in lock.snapshots)[:5000],
    }
    if dagster_run_id:
        tags[TAG_DAGSTER_RUN] = dagster_run_id
    return tags


def describe_version(client: Any, name: str, version: str, lock: SnapshotLock, dagster_run_id: str | None) -> None:
    """Put the lock's summary and the Dagster run on a registered model version (description and tags)."""
    client.update_model_version(name, version, description=lock_description(lock, dagster_run_id))
    for k, v in lock_tags(lock, dagster_run_id).items():
        client.set_model_version_tag(name, version, k, v)
