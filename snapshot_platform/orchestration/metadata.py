"""The names Dagster records and shows: asset keys, metadata keys, and the metadata builders.

``snapshot/version`` on a snapshot materialization is what :mod:`~snapshot_platform.orchestration.versions`
reads back to decide which version a downstream asset loads.
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, MetadataValue, TableColumn, TableSchema

from snapshot_platform.capture import SnapshotOutcome

SNAPSHOT_PREFIX = "snapshots"
MODEL_PREFIX = "models"

VERSION_METADATA_KEY = "snapshot/version"


def snapshot_key(name: str) -> AssetKey:
    return AssetKey([SNAPSHOT_PREFIX, name])


def model_key(name: str) -> AssetKey:
    return AssetKey([MODEL_PREFIX, name])


def snapshot_metadata(outcome: SnapshotOutcome) -> dict[str, Any]:
    """A snapshot materialization's metadata, from the published manifest."""
    m = outcome.result.manifest
    return {
        "dagster/row_count": m.row_count,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=c.name, type=c.type) for c in m.schema]
        ),
        "dagster/uri": outcome.result.uri,
        VERSION_METADATA_KEY: m.version,
        "snapshot/new_version": outcome.result.created,
        "snapshot/files": MetadataValue.json([f.as_dict() for f in m.files]),
        "snapshot/query": MetadataValue.md(f"```sql\n{m.query.strip()}\n```"),
        "snapshot/query_sha256": m.query_sha256,
        "snapshot/params": MetadataValue.json(m.params),
        "snapshot/source": MetadataValue.json(m.source),
        "snapshot/source_state": MetadataValue.json(m.source_state),
        "snapshot/created_at": m.created_at,
        "snapshot/duration_s": round(outcome.seconds, 3),
        "snapshot/rows_per_s": round(outcome.rows_per_second, 1),
        "snapshot/attempts": outcome.attempts,
    }


def check_metadata(version: str, details: dict[str, Any]) -> dict[str, Any]:
    """An asset check result's metadata: its details, the version checked, and the numeric details."""
    return {
        "details": MetadataValue.json(details),
        VERSION_METADATA_KEY: version,
        **{k: v for k, v in details.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    }


def training_metadata(
    name: str, result: Any, logged: Any, versions: dict[str, str], how: dict[str, str]
) -> dict[str, Any]:
    """A model materialization's metadata: the MLflow run, the versions trained on and how each was chosen."""
    return {
        "mlflow/run_id": logged.run_id,
        "mlflow/tracking_uri": logged.tracking_uri,
        "mlflow/model_uri": logged.model_uri,
        "mlflow/registered_model": f"{name} version {logged.registered_model_version}",
        "mlflow/model_format": logged.model_format,
        "snapshot/versions": MetadataValue.json(versions),
        "snapshot/version_sources": MetadataValue.json(how),
        "training/rows_train": int((~result.test_mask).sum()),
        "training/rows_test": int(result.test_mask.sum()),
        "training/code_version": result.code_version,
        "training/seconds": round(result.seconds.get("total", 0.0), 3),
        **{f"metric/{k}": float(v) for k, v in result.metrics.items()},
    }
