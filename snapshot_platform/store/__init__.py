"""Versioned, write-once, hash-verified Parquet snapshots. A plain library: no Dagster, no databases."""

from snapshot_platform.store.manifest import (
    MANIFEST_NAME,
    CheckOutcome,
    FileEntry,
    Manifest,
    ManifestError,
    SchemaColumn,
    schema_to_json,
    sha256_text,
)
from snapshot_platform.store.store import (
    STORAGE_ENV,
    IntegrityError,
    PublishResult,
    SnapshotNotFound,
    SnapshotStore,
    default_storage_url,
)
from snapshot_platform.store.writer import StorageWriteError, WriterSettings

__all__ = [
    "MANIFEST_NAME",
    "CheckOutcome",
    "FileEntry",
    "Manifest",
    "STORAGE_ENV",
    "IntegrityError",
    "ManifestError",
    "PublishResult",
    "SchemaColumn",
    "SnapshotNotFound",
    "SnapshotStore",
    "StorageWriteError",
    "WriterSettings",
    "default_storage_url",
    "schema_to_json",
    "sha256_text",
]
