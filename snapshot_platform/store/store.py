"""The snapshot store: publish write-once versions atomically, list them, read them hash-verified.

Layout (DESIGN.md §2)::

    <root>/snapshots/<name>/<partition_key>/<version>/manifest.json
    <root>/snapshots/<name>/<partition_key>/<version>/part-00000.parquet
    <root>/.staging/<uuid>/...            (data being written; never read)

Publishing: parts go to a private staging folder first and are hashed as they are written; the
version id follows from the hashes; the folder is moved into place (a rename on local disk, copies
on object stores); ``manifest.json`` is created last and only if absent (a hard link on local disk,
a conditional create on object stores). Readers only believe folders that have a manifest, so a
writer killed at any instant leaves nothing a reader can mistake for a snapshot.

This module is a plain library: it knows nothing of Dagster or of databases.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from snapshot_platform.home import platform_home
from snapshot_platform.store import backends
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.writer import WriterSettings, WrittenData, prefetch, write_parts

STORAGE_ENV = "SNAPSHOT_PLATFORM_STORAGE_URL"
STAGING = ".staging"  # <root>/.staging/<uuid>/: private, in-flight writes (store/gc.py reclaims them)
_HASH_CHUNK = 8 * 1024 * 1024


class SnapshotNotFound(LookupError):
    pass


class IntegrityError(RuntimeError):
    """Stored bytes do not match the manifest. The message names the file."""


@dataclass(frozen=True)
class PublishResult:
    version: str
    created: bool  # False: this exact version was already published, nothing was written
    manifest: dict[str, Any]
    uri: str


def default_storage_url() -> str:
    """$SNAPSHOT_PLATFORM_STORAGE_URL, else ``storage/`` in the platform home (~/.snapshot_platform)."""
    return os.environ.get(STORAGE_ENV) or str(platform_home() / "storage")


def _is_local(p: UPath) -> bool:
    return getattr(p, "protocol", "") in ("", "file", "local")


def _safe_component(value: str, what: str) -> str:
    if (
        not value
        or value in (".", "..")
        or any(c in value for c in "/\\\x00\n\r")
        or value.startswith(".")
        or len(value) > 200
    ):
        raise ValueError(f"{what} {value!r} cannot be used as a storage path component")
    return value


def sha256_of(path: UPath) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


class SnapshotStore:
    """Versioned, write-once Parquet snapshots under one root (a local path or an fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, settings: WriterSettings | None = None,
                 storage_options: dict[str, Any] | None = None):
        url = str(root) if root is not None else default_storage_url()
        self.root = UPath(url, **(storage_options or {}))
        self.settings = settings or WriterSettings()
        self.local = _is_local(self.root)

    def __repr__(self) -> str:
        return f"SnapshotStore({self.uri(self.root)!r})"

    # ------------------------------------------------------------ paths

    def uri(self, p: UPath) -> str:
        if self.local:
            return Path(str(p)).resolve().as_uri()
        return str(p)

    def partition_dir(self, asset: str, partition: str) -> UPath:
        return (
            self.root / "snapshots" / _safe_component(asset, "snapshot name")
            / _safe_component(partition, "partition key")
        )

    def version_dir(self, asset: str, partition: str, version: str) -> UPath:
        return self.partition_dir(asset, partition) / _safe_component(version, "version")

    # ------------------------------------------------------------ publishing

    def publish(
        self,
        asset: str,
        partition: str,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        fields: dict[str, Any],
        prefetch_depth: int = 2,
        checker: Callable[[Iterator[pa.RecordBatch]], dict[str, Any]] | None = None,
        check_columns: list[str] | None = None,
        source_types: dict[str, str] | None = None,
    ) -> PublishResult:
        """Write ``batches`` and publish them as a version of ``asset``/``partition``.

        ``fields`` holds the manifest fields the store cannot know (window, query, params, source,
        source_state, dagster_run_id, code_version, library_versions, ...). If the content is
        already published, nothing is written and the existing version is returned.

        ``checker``, if given, is called with the written rows (streamed back from the staged
        files, only ``check_columns``) before the manifest exists; what it returns is recorded in
        the manifest under ``checks``.

        ``source_types`` (column → database type) is recorded in the manifest's schema entries.
        """
        self.partition_dir(asset, partition)  # validates the components before any write
        staging = self.root / STAGING / uuid.uuid4().hex
        try:
            written = self._write_staging(staging, schema, prefetch(batches, prefetch_depth))
            version = mf.version_id(schema, [p.sha256 for p in written.parts])
            final = self.version_dir(asset, partition, version)
            existing = self._try_manifest(final)
            if existing is not None:
                return PublishResult(version, False, existing, self.uri(final))
            manifest = {
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
                "writer": self.settings.as_dict(),
            }
            if checker is not None:
                manifest["checks"] = checker(self._staged_batches(staging, written, check_columns))
            raw = mf.dumps(manifest)
            if self.local:
                created = self._place_local(staging, final, written, raw)
            else:
                created = self._place_remote(staging, final, written, raw)
            if not created:
                return PublishResult(version, False, self.read_manifest(asset, partition, version),
                                     self.uri(final))
            return PublishResult(version, True, manifest, self.uri(final))
        finally:
            self._remove(staging)

    def _write_staging(self, staging: UPath, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> WrittenData:
        staging.mkdir(parents=True, exist_ok=True)

        def open_part(name: str) -> Any:
            return (staging / name).open("wb")

        return write_parts(batches, schema, open_part, self.settings)

    def _staged_batches(self, staging: UPath, written: WrittenData, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        cols = [c for c in columns if c in written.schema.names] if columns is not None else None
        for part in written.parts:
            with (staging / part.path).open("rb") as f:
                yield from pq.ParquetFile(f).iter_batches(batch_size=65_536, columns=cols)

    def _place_local(self, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
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
            # A folder for this version exists without a manifest (see _try_manifest): a writer
            # died between moving its data into place and writing the manifest, or is about to
            # write it. If its files are ours byte for byte, adopt them; otherwise set them aside.
            if not self._same_files(UPath(str(dst)), written):
                aside = Path(str(self.root)) / STAGING / f"abandoned-{uuid.uuid4().hex}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.rename(dst, aside)
                os.rename(src, dst)
        _fsync_dir(dst.parent)
        tmp = dst / f".manifest-{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, dst / mf.MANIFEST_NAME)  # atomic create-if-absent
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp.unlink()
        _fsync_dir(dst)
        return created

    def _place_remote(self, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
        """Copy the staged parts into the version folder, then create the manifest only if absent.

        Parts already in the folder (a concurrent publisher of this version, or one that died before
        its manifest) hold the same bytes, the version id being a digest of them, so copying over
        them changes nothing a reader could see; the conditional create of the manifest decides
        which publisher wins (store/backends.py has how each object store spells it).
        """
        fs = self.root.fs
        backends.backend_of(fs)  # refuse a backend without a conditional create before copying
        target = _fs_path(final / mf.MANIFEST_NAME)
        fs.invalidate_cache(target)
        if fs.exists(target):  # published since publish() looked: write nothing
            return False
        try:
            for part in written.parts:
                src, dst = _fs_path(staging / part.path), _fs_path(final / part.path)
                backends.copy_object(fs, src, dst, part.bytes)
        except Exception:
            fs.invalidate_cache(target)
            if fs.exists(target):  # lost the race and the store refused the copy (e.g. object lock)
                return False
            raise
        return backends.create_exclusive(fs, target, raw)

    def _same_files(self, folder: UPath, written: WrittenData) -> bool:
        for part in written.parts:
            p = folder / part.path
            try:
                digest, size = sha256_of(p)
            except FileNotFoundError:
                return False
            if digest != part.sha256 or size != part.bytes:
                return False
        return True

    def _remove(self, p: UPath, quiet: bool = True) -> None:
        """Delete the folder ``p``. Quiet (clean-up after a failure): errors are logged or ignored,
        never hiding the error that brought us here; otherwise they are raised."""
        if self.local:
            shutil.rmtree(str(p), ignore_errors=quiet)
        elif quiet:
            backends.remove_tree(p.fs, _fs_path(p))
        else:
            try:
                p.fs.rm(_fs_path(p), recursive=True)
            finally:
                p.fs.invalidate_cache(_fs_path(p))

    # ------------------------------------------------------------ reading

    def _try_manifest(self, version_dir: UPath) -> dict[str, Any] | None:
        p = version_dir / mf.MANIFEST_NAME
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        return mf.loads(raw, where=self.uri(p))

    def assets(self) -> list[str]:
        base = self.root / "snapshots"
        return sorted(p.name for p in _listdir(base) if not p.name.startswith("."))

    def partitions(self, asset: str) -> list[str]:
        base = self.root / "snapshots" / _safe_component(asset, "snapshot name")
        return sorted(p.name for p in _listdir(base) if not p.name.startswith("."))

    def versions(self, asset: str, partition: str) -> list[dict[str, Any]]:
        """Published versions of one partition, oldest first (folders without a manifest are skipped)."""
        found = []
        for d in _listdir(self.partition_dir(asset, partition)):
            if d.name.startswith("."):
                continue
            m = self._try_manifest(d)
            if m is not None:
                found.append(m)
        return sorted(found, key=lambda m: (m["created_at"], m["version"]))

    def latest(self, asset: str, partition: str) -> dict[str, Any]:
        versions = self.versions(asset, partition)
        if not versions:
            raise SnapshotNotFound(f"no published version of {asset} partition {partition} in {self}")
        return versions[-1]

    def read_manifest(self, asset: str, partition: str, version: str | None = None) -> dict[str, Any]:
        if version is None:
            return self.latest(asset, partition)
        m = self._try_manifest(self.version_dir(asset, partition, version))
        if m is None:
            raise SnapshotNotFound(f"{asset} partition {partition} has no published version {version!r}")
        return m

    def file_uri(self, manifest: dict[str, Any], rel: str) -> str:
        return self.uri(self.version_dir(manifest["asset"], manifest["partition"], manifest["version"]) / rel)

    def verify_version(self, manifest: dict[str, Any]) -> list[str]:
        """Every mismatch between the stored files and the manifest; empty when intact."""
        problems = []
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        for f in manifest["files"]:
            p = folder / f["path"]
            try:
                digest, size = sha256_of(p)
            except FileNotFoundError:
                problems.append(f"{self.uri(p)}: missing")
                continue
            if size != f["bytes"]:
                problems.append(f"{self.uri(p)}: {size} bytes, manifest says {f['bytes']}")
            elif digest != f["sha256"]:
                problems.append(f"{self.uri(p)}: sha256 {digest} does not match the manifest's {f['sha256']}")
        return problems

    def _verified_bytes(self, manifest: dict[str, Any], f: dict[str, Any]) -> bytes:
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        p = folder / f["path"]
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{self.uri(p)}: missing, listed in the manifest") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != f["sha256"] or len(data) != f["bytes"]:
            raise IntegrityError(
                f"{self.uri(p)}: content does not match the manifest "
                f"(sha256 {digest}, expected {f['sha256']}); the snapshot is corrupt"
            )
        return data

    def iter_batches(
        self, manifest: dict[str, Any], columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Stream a version's rows; each part is hash-verified before any of its rows is returned.

        Memory stays at about one batch: a part is hashed in a streaming pass, then read row group
        by row group (published files are write-once, so the second pass reads the verified bytes).
        """
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        for f in manifest["files"]:
            p = folder / f["path"]
            try:
                digest, size = sha256_of(p)
            except FileNotFoundError:
                raise IntegrityError(f"{self.uri(p)}: missing, listed in the manifest") from None
            if digest != f["sha256"] or size != f["bytes"]:
                raise IntegrityError(
                    f"{self.uri(p)}: content does not match the manifest "
                    f"(sha256 {digest}, expected {f['sha256']}); the snapshot is corrupt"
                )
            with p.open("rb") as fh:
                yield from pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=columns)

    def read_table(
        self, asset: str, partition: str, version: str | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """One version as an Arrow table, hash-verified (the latest version when none is given)."""
        manifest = self.read_manifest(asset, partition, version)
        tables = []
        for f in manifest["files"]:
            data = self._verified_bytes(manifest, f)
            # ParquetFile, not pq.read_table: the dataset reader's I/O threads can outlive a
            # BytesIO at interpreter exit and abort the process
            tables.append(pq.ParquetFile(io.BytesIO(data)).read(columns=columns))
        schema = tables[0].schema if tables else None
        return pa.concat_tables(tables) if len(tables) > 1 else (tables[0] if tables else pa.table({}, schema=schema))


def _fs_path(p: UPath) -> str:
    return p.path


def _listdir(p: UPath) -> list[UPath]:
    """The sub-folders of ``p``; none when ``p`` does not exist."""
    if _is_local(p):
        try:
            return [c for c in p.iterdir() if c.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs, path = p.fs, _fs_path(p)
    # fsspec object stores cache listings for the life of the process (s3fs: with no expiry), so a
    # long-lived process would never see versions published by others: list afresh every time.
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = {posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory"}
    return [p / name for name in sorted(names) if name]


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
