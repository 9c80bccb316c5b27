"""The snapshot store: publish write-once versions atomically, list them, read them hash-verified.

Layout (docs/architecture.md)::

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

import base64
import datetime as dt
import errno
import hashlib
import logging
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
from snapshot_platform.store.integrity import RowChecks
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.manifest import ManifestError
from snapshot_platform.store.writer import (
    WriterSettings,
    WrittenData,
    prefetch,
    storage_write_error,
    write_parts,
)

STORAGE_ENV = "SNAPSHOT_PLATFORM_STORAGE_URL"
STAGING = ".staging"  # <root>/.staging/<uuid>/: private, in-flight writes (store/gc.py reclaims them)
_HASH_CHUNK = 8 * 1024 * 1024
# a local publisher's manifest, written beside the folder's files and linked into place (_place_local)
_MANIFEST_TMP_PREFIX = ".manifest-"

log = logging.getLogger(__name__)


class SnapshotNotFound(LookupError):
    pass


class IntegrityError(RuntimeError):
    """Stored bytes do not match the manifest, or the manifest does not match the bytes (its
    version id, row counts, folder, unlisted files, or a recorded check the rows contradict).
    The message names the version and the file."""


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
        cancel: Callable[[], None] | None = None,
    ) -> PublishResult:
        """Write ``batches`` and publish them as a version of ``asset``/``partition``.

        ``fields`` holds the manifest fields the store cannot know (window, query, params, source,
        source_state, dagster_run_id, code_version, library_versions, ...). If the content is
        already published, nothing is written and the existing version is returned.

        ``checker``, if given, is called with the written rows (streamed back from the staged
        files, only ``check_columns``) before the manifest exists; what it returns is recorded in
        the manifest under ``checks``.

        ``source_types`` (column → database type) is recorded in the manifest's schema entries.

        ``batches`` is pulled by a background thread, which has stopped (and left the source's
        driver) when this returns or raises, whatever the error: the caller may close the source
        then. ``cancel`` (the source's server-side cancel) ends a fetch that thread is waiting in.
        A failed write (disk full, a refused upload) raises :class:`StorageWriteError`, one line
        naming the cause and the file; the staging folder is removed on every path.
        """
        self.partition_dir(asset, partition)  # validates the components before any write
        staging = self.root / STAGING / uuid.uuid4().hex
        try:
            with prefetch(batches, prefetch_depth, cancel) as pulled:
                written = self._write_staging(staging, schema, pulled)
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
            try:
                if self.local:
                    created = self._place_local(staging, final, written, raw)
                else:
                    created = self._place_remote(staging, final, written, raw)
            except OSError as exc:  # disk full, a refused upload: say so, and where
                raise storage_write_error(exc, getattr(exc, "filename", None) or self.uri(final)) from exc
            if not created:
                return PublishResult(version, False, self.read_manifest(asset, partition, version),
                                     self.uri(final))
            return PublishResult(version, True, manifest, self.uri(final))
        finally:
            self._remove(staging)

    def _write_staging(self, staging: UPath, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> WrittenData:
        try:
            staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_write_error(exc, self.uri(staging)) from exc

        def open_part(name: str) -> Any:
            return (staging / name).open("wb")

        return write_parts(batches, schema, open_part, self.settings, where=lambda name: self.uri(staging / name))

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
        """The manifest of ``version_dir``, None if it has none. A manifest that is malformed, or
        that describes another folder than the one it sits in, is a :class:`ManifestError`."""
        p = version_dir / mf.MANIFEST_NAME
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        where = self.uri(p)
        m = mf.loads(raw, where=where)
        mf.check_location(m, version_dir.parent.parent.name, version_dir.parent.name, version_dir.name, where)
        return m

    def assets(self) -> list[str]:
        base = self.root / "snapshots"
        return sorted(p.name for p in _listdir(base) if not p.name.startswith("."))

    def partitions(self, asset: str) -> list[str]:
        base = self.root / "snapshots" / _safe_component(asset, "snapshot name")
        return sorted(p.name for p in _listdir(base) if not p.name.startswith("."))

    def scan(self, asset: str, partition: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Published versions of one partition, oldest first, and one message per manifest that cannot
        be believed (malformed, or not describing its own folder), each naming the file.

        Folders without a manifest are not versions and are skipped silently."""
        found, bad = [], []
        for d in _listdir(self.partition_dir(asset, partition)):
            if d.name.startswith("."):
                continue
            try:
                m = self._try_manifest(d)
            except ManifestError as exc:
                bad.append(str(exc))
                continue
            if m is not None:
                found.append(m)
        return sorted(found, key=lambda m: (m["created_at"], m["version"])), bad

    def versions(self, asset: str, partition: str) -> list[dict[str, Any]]:
        """Published versions of one partition, oldest first (folders without a manifest are skipped;
        a manifest that cannot be believed is skipped with a logged warning: see :meth:`scan`)."""
        found, bad = self.scan(asset, partition)
        for problem in bad:
            log.warning("skipping a version that cannot be believed: %s", problem)
        return found

    def latest(self, asset: str, partition: str) -> dict[str, Any]:
        """The newest published version. A partition holding a manifest that cannot be believed has
        no latest version one could trust: that is a :class:`ManifestError` naming it."""
        versions, bad = self.scan(asset, partition)
        if bad:
            raise ManifestError(f"{asset} partition {partition}: cannot tell its latest version: " + "; ".join(bad))
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

    # ------------------------------------------------------------ a version proves itself

    def _check_files(self, manifest: dict[str, Any], problems: list[str], strict: bool) -> pa.Schema | None:
        """First pass over a version (store/integrity.py): hash every part, read its footer, list the
        folder; then the version id must equal the digest of the footers' schema and the hashes.

        Appends a message per problem (naming the file); ``strict`` raises :class:`IntegrityError` at
        the first. Returns the parts' Arrow schema (None when no part could be read)."""
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        where = f"{manifest['asset']}/{manifest['partition']} version {manifest['version']}"

        def problem(text: str) -> None:
            problems.append(text)
            if strict:
                raise IntegrityError(f"{where}: {text}; the snapshot is corrupt")

        listed = {f["path"].split("/")[0] for f in manifest["files"]} | {mf.MANIFEST_NAME}
        for name in _file_names(folder):
            if name not in listed and not (name.startswith(_MANIFEST_TMP_PREFIX) and name.endswith(".tmp")):
                problem(f"{self.uri(folder / name)}: not listed in the manifest")
        schema: pa.Schema | None = None
        hashes_ok = True
        if not manifest["files"]:
            problem(f"{self.uri(folder)}: the manifest lists no files (every version has at least one part)")
        for f in manifest["files"]:
            p = folder / f["path"]
            try:
                digest, size = sha256_of(p)
            except FileNotFoundError:
                hashes_ok = False
                problem(f"{self.uri(p)}: missing, listed in the manifest")
                continue
            if size != f["bytes"]:
                hashes_ok = False
                problem(f"{self.uri(p)}: {size} bytes, manifest says {f['bytes']}")
                continue
            if digest != f["sha256"]:
                hashes_ok = False
                problem(f"{self.uri(p)}: sha256 {digest} does not match the manifest's {f['sha256']}")
                continue
            try:
                with p.open("rb") as fh:
                    meta = pq.ParquetFile(fh).metadata
                    part_schema, rows = _written_arrow_schema(meta), meta.num_rows
            except (pa.ArrowException, OSError) as exc:
                problem(f"{self.uri(p)}: not a readable Parquet file: {exc}")
                continue
            if rows != f["rows"]:
                problem(f"{self.uri(p)}: {rows} rows in its Parquet footer, manifest says {f['rows']}")
            if schema is None:
                schema = part_schema
            elif not part_schema.equals(schema):
                problem(f"{self.uri(p)}: its schema differs from the first part's")
        if schema is not None and hashes_ok:
            recorded = mf.schema_without_source_types(manifest["schema"])
            if mf.schema_to_json(schema) != recorded:
                problem(f"{self.uri(folder)}: the manifest's schema is not the Parquet files' schema")
            expected = mf.version_id(schema, [f["sha256"] for f in manifest["files"]])
            if expected != manifest["version"]:
                problem(f"{self.uri(folder)}: the version id is not the digest of the schema and parts "
                        f"(recomputed {expected})")
        return schema

    def _read_parts(self, manifest: dict[str, Any], columns: list[str] | None, batch_rows: int,
                    problems: list[str], strict: bool) -> Iterator[pa.RecordBatch]:
        """Check a version (:meth:`_check_files`), then stream its rows (only ``columns``), re-deriving
        its row checks on the way (store/integrity.py); contradictions are appended to ``problems``
        once the last row was read (``strict``: raised as :class:`IntegrityError`)."""
        self._check_files(manifest, problems, strict)
        if problems:  # the bytes are not what the manifest describes: read nothing
            return
        yield from self._stream_parts(manifest, columns, batch_rows, problems, strict)

    def _stream_parts(self, manifest: dict[str, Any], columns: list[str] | None, batch_rows: int,
                      problems: list[str], strict: bool) -> Iterator[pa.RecordBatch]:
        """The rows of a version :meth:`_check_files` passed, with its row checks re-derived."""
        derive = RowChecks(manifest)
        need = derive.columns()
        read_cols = None if columns is None else list(dict.fromkeys([*columns, *need]))
        extra = columns is not None and len(read_cols or []) != len(columns)
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        for f in manifest["files"]:
            with (folder / f["path"]).open("rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=read_cols):
                    derive.add(batch)
                    yield batch.select(columns) if extra else batch
        where = f"{self.uri(folder)}"
        found = derive.contradictions(where)
        if derive.rows != manifest["row_count"]:
            found.insert(0, f"{where}: {derive.rows} rows read, manifest says {manifest['row_count']}")
        problems.extend(found)
        if found and strict:
            raise IntegrityError(
                f"{manifest['asset']}/{manifest['partition']} version {manifest['version']}: "
                + "; ".join(found) + "; the version cannot be trusted"
            )

    def verify_version(self, manifest: dict[str, Any]) -> list[str]:
        """Every way the stored version disagrees with its manifest; empty when it proves itself.

        Re-hashes every file, recomputes the version id, compares the Parquet row counts, looks for
        unlisted files, and re-derives the row checks from the key and not-null columns (streaming).
        The folder identity is checked when the manifest is read (:meth:`read_manifest`)."""
        problems: list[str] = []
        derive_cols = RowChecks(manifest).columns()
        for _ in self._read_parts(manifest, derive_cols, 65_536, problems, strict=False):
            pass
        return problems

    def iter_batches(
        self, manifest: dict[str, Any], columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Stream a version's rows, verified: before the first row, every part is hashed and the
        version id, row counts and folder are checked; the row checks are re-derived on the way and
        a contradiction raises :class:`IntegrityError` after the last row (store/integrity.py).

        Memory stays at about one batch: parts are hashed in a streaming pass, then read row group
        by row group (published files are write-once, so the second pass reads the verified bytes).
        """
        yield from self._read_parts(manifest, columns, batch_rows, [], strict=True)

    def open_verified(
        self, manifest: dict[str, Any], columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Verify a version now, as :meth:`iter_batches` does before its first row (an
        :class:`IntegrityError` when it does not prove itself), and return its Arrow schema (read
        from the hash-verified footers, so known even for a version without rows) and the stream of
        its rows (row checks re-derived on the way, as :meth:`iter_batches`)."""
        schema = self._check_files(manifest, [], strict=True)
        if schema is None:  # cannot happen: strict raised at the first unreadable part
            raise IntegrityError(f"{manifest['asset']}/{manifest['partition']} version {manifest['version']}: "
                                 "no readable part; the snapshot is corrupt")
        return schema, self._stream_parts(manifest, columns, batch_rows, [], strict=True)

    def read_table(
        self, asset: str, partition: str, version: str | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """One version as an Arrow table, verified like :meth:`iter_batches` (the latest version when
        none is given)."""
        manifest = self.read_manifest(asset, partition, version)
        batches = list(self.iter_batches(manifest, columns=columns))
        if batches:
            return pa.Table.from_batches(batches)
        schema = pa.schema([])
        folder = self.version_dir(manifest["asset"], manifest["partition"], manifest["version"])
        # ParquetFile, not pq.read_table: the dataset reader's I/O threads can outlive the file at
        # interpreter exit and abort the process
        with (folder / manifest["files"][0]["path"]).open("rb") as fh:
            schema = pq.ParquetFile(fh).schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()


def _written_arrow_schema(meta: pq.FileMetaData) -> pa.Schema:
    """The Arrow schema the writer was given, as pyarrow stores it in the footer (``ARROW:schema``).

    Parquet's own schema names list items ``element`` where Arrow's say ``item`` (and map entries
    differently): the version id digests the writer's schema, so that is the one to compare.
    """
    raw = (meta.metadata or {}).get(b"ARROW:schema")
    if raw is None:
        return meta.schema.to_arrow_schema()
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))
    return schema.remove_metadata()


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


def _file_names(p: UPath) -> list[str]:
    """Names of every entry (files and folders) directly in ``p``."""
    if _is_local(p):
        try:
            return sorted(c.name for c in p.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs, path = p.fs, _fs_path(p)
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = {posixpath.basename(str(e).rstrip("/")) for e in entries}
    return sorted(n for n in names if n)


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
