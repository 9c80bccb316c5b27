"""The write path: stage, hash, check, place, manifest last (docs/architecture.md, "The publish protocol").

Parts go to a private staging folder first and are hashed as they are written; the version id
follows from the hashes; the folder is moved into place (a rename on local disk, copies on object
stores); ``manifest.json`` is created last and only if absent (a hard link on local disk, a
conditional create on object stores). Readers only believe folders that have a manifest, so a
writer killed at any instant leaves nothing a reader can mistake for a snapshot.

``store`` below is the :class:`~snapshot_platform.store.SnapshotStore` being written to (placing
and removing go through its ``_place_local`` and ``_remove``, so a test can stop a publisher there).
Plain library: no Dagster, no database.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from snapshot_platform.store import retention
from snapshot_platform.store import backends
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import STAGING, fs_path, fsync_dir, sha256_of
from snapshot_platform.store.manifest import CheckOutcome, Manifest
from snapshot_platform.store.writer import WrittenData, prefetch, storage_write_error, write_parts


@dataclass(frozen=True)
class PublishResult:
    version: str
    created: bool  # False: this exact version was already published, nothing was written
    manifest: Manifest
    uri: str


def publish(
    store: Any,
    asset: str,
    partition: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    fields: Mapping[str, Any],
    prefetch_depth: int = 2,
    checker: Callable[[Iterator[pa.RecordBatch]], Mapping[str, CheckOutcome]] | None = None,
    check_columns: list[str] | None = None,
    source_types: dict[str, str] | None = None,
    cancel: Callable[[], None] | None = None,
) -> PublishResult:
    """``SnapshotStore.publish`` (its docstring has the contract)."""
    store.partition_dir(asset, partition)  # validates the components before any write
    staging = store.root / STAGING / uuid.uuid4().hex
    try:
        with prefetch(batches, prefetch_depth, cancel) as pulled:
            written = _write_staging(store, staging, schema, pulled)
        version = mf.version_id(schema, [p.sha256 for p in written.parts])
        final = store.version_dir(asset, partition, version)
        existing = store._try_manifest(final)
        if existing is not None:
            # recorded again: say so before reading the manifest once more, so that a concurrent
            # retention gc either sees the mark and keeps the version, or deleted the manifest first
            # and we publish it anew below (store/retention.py has the protocol)
            retention.touch(store, asset, partition, version)
            existing = store._try_manifest(final)
        if existing is not None:
            return PublishResult(version, False, existing, store.uri(final))
        doc: dict[str, Any] = {
            **fields,  # first: what the store computes below cannot be overridden by a caller
            "format_version": mf.FORMAT_VERSION,
            "asset": asset,
            "partition": partition,
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "row_count": written.row_count,
            "files": [
                {"path": p.path, "sha256": p.sha256, "bytes": p.bytes, "rows": p.rows}
                for p in written.parts
            ],
            "schema": mf.schema_to_json(schema, source_types),
            "writer": store.settings.as_dict(),
        }
        if checker is not None:
            doc["checks"] = dict(checker(_staged_batches(staging, written, check_columns)))
        manifest = Manifest.from_dict(doc, where="<new manifest>")
        raw = manifest.to_json()
        try:
            if store.local:
                created = store._place_local(staging, final, written, raw)
            else:
                created = place_remote(store, staging, final, written, raw)
        except OSError as exc:  # disk full, a refused upload: say so, and where
            raise storage_write_error(exc, getattr(exc, "filename", None) or store.uri(final)) from exc
        if not created:
            retention.touch(store, asset, partition, version)
            return PublishResult(version, False, store.read_manifest(asset, partition, version), store.uri(final))
        return PublishResult(version, True, manifest, store.uri(final))
    finally:
        store._remove(staging)


def _write_staging(store: Any, staging: UPath, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> WrittenData:
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_write_error(exc, store.uri(staging)) from exc

    def open_part(name: str) -> Any:
        return (staging / name).open("wb")

    return write_parts(batches, schema, open_part, store.settings, where=lambda name: store.uri(staging / name))


def _staged_batches(staging: UPath, written: WrittenData, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    cols = [c for c in columns if c in written.schema.names] if columns is not None else None
    for part in written.parts:
        with (staging / part.path).open("rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=65_536, columns=cols)


def place_local(store: Any, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
    src, dst = Path(str(staging)), Path(str(final))
    for part in written.parts:
        with open(src / part.path, "rb+") as f:
            os.fsync(f.fileno())
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # A folder for this version exists without a manifest (see SnapshotStore._try_manifest): a
        # writer died between moving its data into place and writing the manifest, or is about to
        # write it. If its files are ours byte for byte, adopt them; otherwise set them aside.
        if not _same_files(UPath(str(dst)), written):
            aside = Path(str(store.root)) / STAGING / f"abandoned-{uuid.uuid4().hex}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(dst, aside)
            os.rename(src, dst)
    fsync_dir(dst.parent)
    tmp = dst / f".manifest-{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, dst / mf.MANIFEST_NAME)  # atomic create-if-absent
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:  # e.g. the disk filled up: the error names the manifest, not the tmp
        exc.filename = str(dst / mf.MANIFEST_NAME)
        raise
    finally:
        # never leave a .tmp in a version folder, whatever failed (the disk is full: unlink works)
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    fsync_dir(dst)
    return created


def place_remote(store: Any, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
    """Copy the staged parts into the version folder, then create the manifest only if absent.

    Parts already in the folder (a concurrent publisher of this version, or one that died before
    its manifest) hold the same bytes, the version id being a digest of them, so copying over
    them changes nothing a reader could see; the conditional create of the manifest decides
    which publisher wins (store/backends.py has how each object store spells it).
    """
    fs = store.root.fs
    backends.backend_of(fs)  # refuse a backend without a conditional create before copying
    target = fs_path(final / mf.MANIFEST_NAME)
    fs.invalidate_cache(target)
    if fs.exists(target):  # published since publish() looked: write nothing
        return False
    try:
        for part in written.parts:
            src, dst = fs_path(staging / part.path), fs_path(final / part.path)
            backends.copy_object(fs, src, dst, part.bytes)
    except Exception:
        fs.invalidate_cache(target)
        if fs.exists(target):  # lost the race and the store refused the copy (e.g. object lock)
            return False
        raise
    return backends.create_exclusive(fs, target, raw)


def _same_files(folder: UPath, written: WrittenData) -> bool:
    for part in written.parts:
        p = folder / part.path
        try:
            digest, size = sha256_of(p)
        except FileNotFoundError:
            return False
        if digest != part.sha256 or size != part.bytes:
            return False
    return True


def remove(store: Any, p: UPath, quiet: bool = True) -> None:
    """Delete the folder ``p``. Quiet (clean-up after a failure): errors are logged or ignored,
    never hiding the error that brought us here; otherwise they are raised."""
    if store.local:
        shutil.rmtree(str(p), ignore_errors=quiet)
    elif quiet:
        backends.remove_tree(p.fs, fs_path(p))
    else:
        try:
            p.fs.rm(fs_path(p), recursive=True)
        finally:
            p.fs.invalidate_cache(fs_path(p))
