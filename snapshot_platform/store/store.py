"""The snapshot store: publish write-once versions atomically, list them, read them hash-verified.

Layout (docs/architecture.md)::

    <root>/snapshots/<name>/<partition_key>/<version>/manifest.json
    <root>/parts/<sha256[:2]>/<sha256>.parquet   (the parts, one file per content, shared by versions)
    <root>/.staging/<uuid>/...            (data being written; never read)

Versions written before format 3 keep their parts in the version folder (``part-00000.parquet``);
:meth:`SnapshotStore.part_path` tells where a manifest's part is, for either layout.

The write path is in store/publish.py, the checks a version passes before a row is read in
store/verify.py and store/integrity.py; :class:`SnapshotStore` is their one public face. Every
manifest goes in and out as a :class:`~snapshot_platform.store.manifest.Manifest`.

This module is a plain library: it knows nothing of Dagster or of databases.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from snapshot_platform.home import platform_home
from snapshot_platform.store import manifest as mf
from snapshot_platform.store import publish as pub
from snapshot_platform.store import verify
from snapshot_platform.store.files import is_local, listdir, safe_component
from snapshot_platform.store.integrity import RowChecks
from snapshot_platform.store.manifest import CheckOutcome, Manifest, ManifestError
from snapshot_platform.store.publish import PublishResult
from snapshot_platform.store.verify import IntegrityError
from snapshot_platform.store.writer import WriterSettings, WrittenData

STORAGE_ENV = "SNAPSHOT_PLATFORM_STORAGE_URL"

log = logging.getLogger(__name__)

__all__ = ["STORAGE_ENV", "IntegrityError", "PublishResult", "SnapshotNotFound", "SnapshotStore",
           "default_storage_url"]


class SnapshotNotFound(LookupError):
    pass


def default_storage_url() -> str:
    """$SNAPSHOT_PLATFORM_STORAGE_URL, else ``storage/`` in the platform home (~/.snapshot_platform)."""
    return os.environ.get(STORAGE_ENV) or str(platform_home() / "storage")


class SnapshotStore:
    """Versioned, write-once Parquet snapshots under one root (a local path or an fsspec URL)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, settings: WriterSettings | None = None,
                 storage_options: dict[str, Any] | None = None, upload_tmp_dir: str | None = None):
        url = str(root) if root is not None else default_storage_url()
        self.root = UPath(url, **(storage_options or {}))
        self.settings = settings or WriterSettings()
        self.local = is_local(self.root)
        # on object stores each part is written here before its upload (store/upload.py); None: $TMPDIR
        self.upload_tmp_dir = upload_tmp_dir

    def __repr__(self) -> str:
        return f"SnapshotStore({self.uri(self.root)!r})"

    # ------------------------------------------------------------ paths

    def uri(self, p: UPath) -> str:
        if self.local:
            return Path(str(p)).resolve().as_uri()
        return str(p)

    def partition_dir(self, asset: str, partition: str) -> UPath:
        return (
            self.root / "snapshots" / safe_component(asset, "snapshot name")
            / safe_component(partition, "partition key")
        )

    def version_dir(self, asset: str, partition: str, version: str) -> UPath:
        return self.partition_dir(asset, partition) / safe_component(version, "version")

    # ------------------------------------------------------------ publishing (store/publish.py)

    def publish(
        self,
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
        """Write ``batches`` and publish them as a version of ``asset``/``partition``.

        ``fields`` holds the manifest fields the store cannot know (window, query, params, source,
        source_state, dagster_run_id, code_version, library_versions, ...). If the content is
        already published, nothing is written and the existing version is returned.

        ``checker``, if given, is called once every row is written, before the manifest exists (it
        sees the rows on their way in, as capture.py's checks do: wrap ``batches``); the outcomes it
        returns (check name -> :class:`CheckOutcome`) are recorded in the manifest under ``checks``.

        ``source_types`` (column → database type) is recorded in the manifest's schema entries.

        ``batches`` is pulled by a background thread, which has stopped (and left the source's
        driver) when this returns or raises, whatever the error: the caller may close the source
        then. ``cancel`` (the source's server-side cancel) ends a fetch that thread is waiting in.
        A failed write (disk full, a refused upload) raises :class:`StorageWriteError`, one line
        naming the cause and the file; the staging folder (local disk) or the temporary file
        and the publish intents (object stores, store/upload.py) are removed on every path.
        """
        return pub.publish(self, asset, partition, schema, batches, fields, prefetch_depth, checker,
                           source_types, cancel)

    def _place_local(self, staging: UPath, final: UPath, written: WrittenData, raw: bytes) -> bool:
        return pub.place_local(self, staging, final, written, raw)

    def _remove(self, p: UPath, quiet: bool = True) -> None:
        pub.remove(self, p, quiet)

    # ------------------------------------------------------------ reading

    def _try_manifest(self, version_dir: UPath) -> Manifest | None:
        """The manifest of ``version_dir``, None if it has none. A manifest that is malformed, or
        that describes another folder than the one it sits in, is a :class:`ManifestError`."""
        p = version_dir / mf.MANIFEST_NAME
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        where = self.uri(p)
        m = Manifest.from_json(raw, where=where)
        mf.check_location(m, version_dir.parent.parent.name, version_dir.parent.name, version_dir.name, where)
        return m

    def assets(self) -> list[str]:
        base = self.root / "snapshots"
        return sorted(p.name for p in listdir(base) if not p.name.startswith("."))

    def partitions(self, asset: str) -> list[str]:
        base = self.root / "snapshots" / safe_component(asset, "snapshot name")
        return sorted(p.name for p in listdir(base) if not p.name.startswith("."))

    def scan(self, asset: str, partition: str) -> tuple[list[Manifest], list[str]]:
        """Published versions of one partition, oldest first, and one message per manifest that cannot
        be believed (malformed, or not describing its own folder), each naming the file.

        Folders without a manifest are not versions and are skipped silently."""
        found, bad = [], []
        for d in listdir(self.partition_dir(asset, partition)):
            if d.name.startswith("."):
                continue
            try:
                m = self._try_manifest(d)
            except ManifestError as exc:
                bad.append(str(exc))
                continue
            if m is not None:
                found.append(m)
        return sorted(found, key=lambda m: (m.created_at, m.version)), bad

    def versions(self, asset: str, partition: str) -> list[Manifest]:
        """Published versions of one partition, oldest first (folders without a manifest are skipped;
        a manifest that cannot be believed is skipped with a logged warning: see :meth:`scan`)."""
        found, bad = self.scan(asset, partition)
        for problem in bad:
            log.warning("skipping a version that cannot be believed: %s", problem)
        return found

    def latest(self, asset: str, partition: str) -> Manifest:
        """The newest published version. A partition holding a manifest that cannot be believed has
        no latest version one could trust: that is a :class:`ManifestError` naming it."""
        versions, bad = self.scan(asset, partition)
        if bad:
            raise ManifestError(f"{asset} partition {partition}: cannot tell its latest version: " + "; ".join(bad))
        if not versions:
            raise SnapshotNotFound(f"no published version of {asset} partition {partition} in {self}")
        return versions[-1]

    def read_manifest(self, asset: str, partition: str, version: str | None = None) -> Manifest:
        if version is None:
            return self.latest(asset, partition)
        m = self._try_manifest(self.version_dir(asset, partition, version))
        if m is None:
            raise SnapshotNotFound(f"{asset} partition {partition} has no published version {version!r}")
        return m

    def part_path(self, manifest: Manifest, entry: mf.FileEntry) -> UPath:
        """Where one of ``manifest``'s parts is stored: the shared part under ``<root>/parts/``
        (format 3), else in the version folder (formats 1 and 2)."""
        if manifest.shared_parts:
            return self.root / entry.path
        return self.version_dir(manifest.asset, manifest.partition, manifest.version) / entry.path

    def file_uri(self, manifest: Manifest, rel: str) -> str:
        return self.uri(self.version_dir(manifest.asset, manifest.partition, manifest.version) / rel)

    # ------------------------------------------------------------ a version proves itself (store/verify.py)

    def verify_version(self, manifest: Manifest, progress: Callable[[int], None] | None = None,
                       hashed: dict[str, tuple[str, int]] | None = None) -> list[str]:
        """Every way the stored version disagrees with its manifest; empty when it proves itself.

        Re-hashes every file, recomputes the version id, compares the Parquet row counts, looks for
        unlisted files, and re-derives the row checks from the key and not-null columns (streaming).
        The folder identity is checked when the manifest is read (:meth:`read_manifest`).
        ``progress``, if given, is told each part's bytes once it was hashed (``verify``'s bar).
        ``hashed``, a dict shared by the calls of one run, hashes a shared part once for all the
        versions that list it (``snapshot-platform verify``)."""
        problems: list[str] = []
        derive_cols = RowChecks(manifest).columns()
        for _ in verify.read_parts(self, manifest, derive_cols, 65_536, problems, strict=False,
                                   progress=progress, hashed=hashed):
            pass
        return problems

    def iter_batches(
        self, manifest: Manifest, columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Stream a version's rows, verified: before the first row, every part is hashed and the
        version id, row counts and folder are checked; the row checks are re-derived on the way and
        a contradiction raises :class:`IntegrityError` after the last row (store/integrity.py).

        Memory stays at about one batch: parts are hashed in a streaming pass, then read row group
        by row group (published files are write-once, so the second pass reads the verified bytes).
        """
        yield from verify.read_parts(self, manifest, columns, batch_rows, [], strict=True)

    def open_verified(
        self, manifest: Manifest, columns: list[str] | None = None, batch_rows: int = 65_536
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Verify a version now, as :meth:`iter_batches` does before its first row (an
        :class:`IntegrityError` when it does not prove itself), and return its Arrow schema (read
        from the hash-verified footers, so known even for a version without rows) and the stream of
        its rows (row checks re-derived on the way, as :meth:`iter_batches`)."""
        schema = verify.check_files(self, manifest, [], strict=True)
        if schema is None:  # cannot happen: strict raised at the first unreadable part
            raise IntegrityError(f"{manifest.where}: no readable part; the snapshot is corrupt")
        return schema, verify.stream_parts(self, manifest, columns, batch_rows, [], strict=True)

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
        # ParquetFile, not pq.read_table: the dataset reader's I/O threads can outlive the file at
        # interpreter exit and abort the process
        with self.part_path(manifest, manifest.files[0]).open("rb") as fh:
            schema = pq.ParquetFile(fh).schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()
