"""The names Dagster records and shows: asset keys, metadata keys, and the metadata builders.

``snapshot/version`` on a snapshot materialization is what :mod:`~snapshot_platform.orchestration.versions`
reads back to decide which version a downstream asset loads.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Mapping
from urllib.parse import quote

from dagster import AssetKey, MetadataValue, TableColumn, TableRecord, TableSchema

from snapshot_platform.capture import SnapshotOutcome

SNAPSHOT_PREFIX = "snapshots"
MODEL_PREFIX = "models"

VERSION_METADATA_KEY = "snapshot/version"


def snapshot_key(name: str) -> AssetKey:
    return AssetKey([SNAPSHOT_PREFIX, name])


def model_key(name: str) -> AssetKey:
    return AssetKey([MODEL_PREFIX, name])


MLFLOW_UI_ENV = "SNAPSHOT_PLATFORM_MLFLOW_UI_URL"

FILES_SCHEMA = TableSchema(columns=[
    TableColumn("path", "string"), TableColumn("rows", "int"), TableColumn("bytes", "int"),
    TableColumn("sha256", "string"),
])
PARTITIONS_SCHEMA = TableSchema(columns=[
    TableColumn("partition", "string"), TableColumn("version", "string", description="the latest version"),
    TableColumn("versions", "int", description="published versions of the partition"),
    TableColumn("rows", "int"), TableColumn("created_at", "string"),
    TableColumn("failed_checks", "string", description="blocking checks the latest version failed"),
])


def location(uri: str) -> Any:
    """A storage location as a path entry (local) or a URL entry (s3://, gs://, az://, ...)."""
    if uri.startswith("file://"):
        return MetadataValue.path(uri[len("file://"):])
    return MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri)


def timestamp(iso: str) -> Any:
    """An ISO-8601 time as a timestamp entry (the UI shows it in the viewer's time zone)."""
    try:
        t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return iso
    return MetadataValue.timestamp(t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc))


def files_table(manifest: Any) -> Any:
    """The manifest's files: path, rows, bytes, sha256."""
    return MetadataValue.table(
        records=[TableRecord({"path": f.path, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256})
                 for f in manifest.files],
        schema=FILES_SCHEMA,
    )


def partitions_table(store: Any, name: str) -> Any:
    """Every published partition of ``name`` and its latest version (refreshed by each materialization)."""
    from snapshot_platform.gate import blocking_failures

    records = []
    for p in store.partitions(name):
        found, _unreadable = store.scan(name, p)
        if not found:
            continue
        m = found[-1]
        records.append(TableRecord({
            "partition": p, "version": m.version, "versions": len(found), "rows": m.row_count,
            "created_at": m.created_at, "failed_checks": ", ".join(blocking_failures(m)) or "-",
        }))
    return MetadataValue.table(records=records, schema=PARTITIONS_SCHEMA)


def mlflow_ui(tracking_uri: str) -> str | None:
    """The MLflow UI's base URL: ``$SNAPSHOT_PLATFORM_MLFLOW_UI_URL`` (e.g. where ``mlflow ui`` serves a
    sqlite store), else the tracking URI itself when it is an http(s) tracking server; None otherwise."""
    ui = os.environ.get(MLFLOW_UI_ENV) or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    return ui.rstrip("/") if ui else None


def snapshot_metadata(outcome: SnapshotOutcome, store: Any = None,
                      descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A snapshot materialization's metadata, from the published manifest; with ``store``, also the
    table of every partition's latest version; ``descriptions`` (the catalog's ``columns``) describe
    the columns of the schema."""
    m = outcome.result.manifest
    extra = {"snapshot/partitions": partitions_table(store, m.asset)} if store is not None else {}
    return {
        "dagster/row_count": m.row_count,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=c.name, type=c.type, description=(descriptions or {}).get(c.name))
                     for c in m.schema]
        ),
        "dagster/uri": outcome.result.uri,
        VERSION_METADATA_KEY: m.version,
        "snapshot/new_version": outcome.result.created,
        "snapshot/manifest": location(f"{outcome.result.uri.rstrip('/')}/manifest.json"),
        "snapshot/files": files_table(m),
        "snapshot/query": MetadataValue.md(f"```sql\n{m.query.strip()}\n```"),
        "snapshot/query_sha256": m.query_sha256,
        "snapshot/params": MetadataValue.json(m.params),
        "snapshot/source": MetadataValue.json(m.source),
        "snapshot/source_state": MetadataValue.json(m.source_state),
        "snapshot/created_at": timestamp(m.created_at),
        "snapshot/duration_s": round(outcome.seconds, 3),
        "snapshot/rows_per_s": round(outcome.rows_per_second, 1),
        "snapshot/attempts": outcome.attempts,
        **extra,
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
    """A model materialization's metadata: the MLflow run, the versions trained on and how each was chosen.

    With an MLflow UI (:func:`mlflow_ui`) the run, the tracking server and the registered model version
    are links to their pages; the bare run id stays in ``mlflow/run``."""
    registered = f"{name} version {logged.registered_model_version}"
    links: dict[str, Any] = {"mlflow/run_id": logged.run_id, "mlflow/tracking_uri": logged.tracking_uri,
                             "mlflow/registered_model": registered}
    ui = mlflow_ui(logged.tracking_uri)
    if ui:
        links = {
            "mlflow/run_id": MetadataValue.url(f"{ui}/#/experiments/{logged.experiment_id}/runs/{logged.run_id}"),
            "mlflow/tracking_uri": MetadataValue.url(ui),
            "mlflow/registered_model": MetadataValue.url(
                f"{ui}/#/models/{quote(logged.registered_model_name, safe='')}/versions/{logged.registered_model_version}"
            ) if logged.registered_model_version else registered,
        }
    return {
        **links,
        "mlflow/run": logged.run_id,
        "mlflow/model_uri": logged.model_uri,
        "mlflow/model_format": logged.model_format,
        "snapshot/versions": MetadataValue.json(versions),
        "snapshot/version_sources": MetadataValue.json(how),
        "training/rows_train": int((~result.test_mask).sum()),
        "training/rows_test": int(result.test_mask.sum()),
        "training/code_version": result.code_version,
        "training/seconds": round(result.seconds.get("total", 0.0), 3),
        **{f"metric/{k}": float(v) for k, v in result.metrics.items()},
    }
