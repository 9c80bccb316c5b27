"""The write path: write, hash, check, place, manifest last (docs/architecture.md, "The publish protocol").

Parts are hashed as they are written; the version id follows from the hashes; each part is stored
once per content under ``<root>/parts/``. On local disk the parts go to a private staging folder
first and are hard-linked into place; on object stores each part goes to a local temporary file
and is uploaded straight to its content key, only if it is not there yet (store/upload.py). A part
already there is not written again. ``manifest.json`` is created last and only if absent (a hard
link on local disk, a conditional create on object stores). Readers only believe folders that have a manifest, so a
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
from upath import UPath

from snapshot_platform.store import retention
from snapshot_platform.store import backends
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import MANIFEST_TMP_PREFIX, STAGING, fs_path, fsync_all, fsync_dir, fsync_file
from snapshot_platform.store.manifest import CheckOutcome, Manifest
from snapshot_platform.store.upload import PartUploader
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
    checker: Callable[[], Mapping[str, CheckOutcome]] | None = None,
    source_types: dict[str, str] | None = None,
    cancel: Callable[[], None] | None = None,
) -> PublishResult:
    """``SnapshotStore.publish`` (its docstring has the contract)."""
    store.partition_dir(asset, partition)  # validates the components before any write
    staging = store.root / STAGING / uuid.uuid4().hex if store.local else None
    uploader = None if store.local else PartUploader(store)
    try:
        with prefetch(batches, prefetch_depth, cancel) as pulled:
            if uploader is None:
                written = _write_staging(store, staging, schema, pulled, fields.get("key"))
            else:
                written = uploader.write(schema, pulled, fields.get("key"))
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
                {"path": mf.part_path(p.sha256), "sha256": p.sha256, "bytes": p.bytes, "rows": p.rows}
                for p in written.parts
            ],
            "schema": mf.schema_to_json(schema, source_types),
            "writer": store.settings.as_dict(),
        }
        if checker is not None:
            doc["checks"] = dict(checker())
        manifest = Manifest.from_dict(doc, where="<new manifest>")
        raw = manifest.to_json()
        try:
            if uploader is None:
                created = store._place_local(staging, final, written, raw)
            else:
                created = uploader.create_manifest(final, raw, _step)
        except OSError as exc:  # disk full, a refused upload: say so, and where
            raise storage_write_error(exc, getattr(exc, "filename", None) or store.uri(final)) from exc
        if not created:
            retention.touch(store, asset, partition, version)
            return PublishResult(version, False, store.read_manifest(asset, partition, version), store.uri(final))
        return PublishResult(version, True, manifest, store.uri(final))
    finally:
        if uploader is not None:
            uploader.close()
        if staging is not None:
            store._remove(staging)


def _write_staging(store: Any, staging: UPath, schema: pa.Schema, batches: Iterator[pa.RecordBatch],
                   key: list[str] | None = None) -> WrittenData:
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_write_error(exc, store.uri(staging)) from exc

    def open_part(name: str) -> Any:
        return (staging / name).open("wb")

    return write_parts(batches, schema, open_part, store.settings, where=lambda name: store.uri(staging / name),
                       key=key)


# test hook: called with "parts_placed" once every part is in place, before the manifest is created
_step: Callable[[str], None] = lambda _name: None


def place_local(store: Any, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
    """Link each staged part into ``<root>/parts/`` under its content name unless a part of that
    content is there already, then create the manifest only if absent (a hard link).

    A part file appears under its content name whole (a hard link of a complete, fsynced file) or
    not at all; one already there of another size than its name says is replaced atomically. The
    parts are announced in an intent first, which a concurrent retention gc honours
    (store/retention.py)."""
    src, dst = Path(str(staging)), Path(str(final))
    root = Path(str(store.root))
    intent = retention.write_intent(store, [p.sha256 for p in written.parts])
    try:
        new_dirs = set()
        absent = []
        for part in written.parts:
            target = root / mf.part_path(part.sha256)
            try:
                if target.stat().st_size == part.bytes:
                    continue  # stored once already: nothing to write (or to fsync)
            except FileNotFoundError:
                pass
            absent.append((src / part.path, target, part))
        fsync_all(fsync_file, [staged for staged, _, _ in absent])  # durable before they are linked
        for staged, target, part in absent:
            if not target.parent.exists():
                new_dirs.update({target.parent.parent, root} if not target.parent.parent.exists()
                                else {target.parent.parent})
                target.parent.mkdir(parents=True, exist_ok=True)
            if _link_part(staged, target, part.bytes):
                new_dirs.add(target.parent)
        fsync_all(fsync_dir, sorted(new_dirs))
        _step("parts_placed")
        retention.check_intent(store, intent)
        if dst.exists() and any(not n.startswith(MANIFEST_TMP_PREFIX) for n in os.listdir(dst)):
            if (dst / mf.MANIFEST_NAME).exists():
                return False
            # a version folder without a manifest holding files: a writer of an earlier release
            # (parts in the version folder) died before its manifest; set it aside, never read it
            aside = root / STAGING / f"abandoned-{uuid.uuid4().hex}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(dst, aside)
        tmp = src / f"{MANIFEST_TMP_PREFIX}{uuid.uuid4().hex}.tmp"  # in staging: the folder only ever holds the manifest
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            dst.mkdir(parents=True, exist_ok=True)
            fsync_dir(dst.parent)
            os.link(tmp, dst / mf.MANIFEST_NAME)  # atomic create-if-absent
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:  # e.g. the disk filled up: the error names the manifest, not the tmp
            exc.filename = str(dst / mf.MANIFEST_NAME)
            raise
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        fsync_dir(dst)
        return created
    finally:
        retention.remove_intent(store, intent)


def _link_part(staged: Path, target: Path, size: int) -> bool:
    """Give ``staged`` the name ``target`` unless a complete part is there; True if it was placed."""
    try:
        os.link(staged, target)  # create-if-absent: a concurrent publisher of the same part loses here
        return True
    except FileExistsError:
        if target.stat().st_size == size:
            return False  # stored once already: nothing to write
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # staging on another filesystem: copy beside the target below
            raise
    # damaged (its size is not its content's) or across filesystems: a complete copy, then one rename
    tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(staged, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
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
