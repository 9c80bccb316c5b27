"""A version proves itself before a row is read: hashes, footers, version id, then the rows' checks.

The one code path behind ``SnapshotStore.iter_batches``, ``open_verified``, ``read_table`` and
``verify_version`` (docs/storage.md, "A version proves itself"; the row checks are in
store/integrity.py). Plain library: no Dagster, no database.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import MANIFEST_TMP_PREFIX, file_names, sha256_of
from snapshot_platform.store.fingerprints import FINGERPRINTS_DIR, SIDECAR_NAME, sidecar_problem
from snapshot_platform.store.integrity import RowChecks
from snapshot_platform.store.manifest import Manifest


class IntegrityError(RuntimeError):
    """Stored bytes do not match the manifest, or the manifest does not match the bytes (its
    version id, row counts, folder, unlisted files, or a recorded check the rows contradict).
    The message names the version and the file."""


def check_files(store: Any, manifest: Manifest, problems: list[str], strict: bool,
                progress: Callable[[int], None] | None = None,
                hashed: dict[str, tuple[str, int]] | None = None) -> pa.Schema | None:
    """First pass over a version (store/integrity.py): hash every part (in the version folder, or
    shared under ``<root>/parts/`` for format 3), read its footer, list the folder; then the version id must equal the digest of the footers' schema and the hashes.

    ``store`` is the :class:`~snapshot_platform.store.SnapshotStore` holding it. Appends a message
    per problem (naming the file); ``strict`` raises :class:`IntegrityError` at the first. Returns
    the parts' Arrow schema (None when no part could be read). ``progress``, if given, is told each
    listed part's bytes once it was hashed (or found missing). ``hashed`` (file URI -> sha256, size),
    if given, is filled and consulted: a shared part several versions list is hashed once per run."""
    folder = store.version_dir(manifest.asset, manifest.partition, manifest.version)
    where = manifest.where

    def problem(text: str) -> None:
        problems.append(text)
        if strict:
            raise IntegrityError(f"{where}: {text}; the snapshot is corrupt")

    # a format 3 version folder holds its manifest only (its parts are shared, under <root>/parts/)
    listed = {mf.MANIFEST_NAME} | (set() if manifest.shared_parts else {f.path.split("/")[0] for f in manifest.files})
    for name in file_names(folder):
        if name == FINGERPRINTS_DIR and name not in listed:
            # source fingerprints recorded after the manifest (store/fingerprints.py): each must be
            # a sidecar named and shaped as that module writes them, nothing else
            for side in file_names(folder / name):
                if not SIDECAR_NAME.match(side):
                    problem(f"{store.uri(folder / name / side)}: not a source fingerprint sidecar")
                    continue
                bad = sidecar_problem((folder / name / side).read_bytes())
                if bad:
                    problem(f"{store.uri(folder / name / side)}: {bad}")
        elif name not in listed and not (name.startswith(MANIFEST_TMP_PREFIX) and name.endswith(".tmp")):
            problem(f"{store.uri(folder / name)}: not listed in the manifest")
    schema: pa.Schema | None = None
    hashes_ok = True
    if not manifest.files:
        problem(f"{store.uri(folder)}: the manifest lists no files (every version has at least one part)")
    for f in manifest.files:
        p = store.part_path(manifest, f)
        try:
            uri = store.uri(p)
            if hashed is not None and uri in hashed:
                digest, size = hashed[uri]
            else:
                digest, size = sha256_of(p)
                if hashed is not None:
                    hashed[uri] = (digest, size)
        except FileNotFoundError:
            hashes_ok = False
            problem(f"{store.uri(p)}: missing, listed in the manifest")
            continue
        finally:
            if progress is not None:
                progress(f.bytes)
        if size != f.bytes:
            hashes_ok = False
            problem(f"{store.uri(p)}: {size} bytes, manifest says {f.bytes}")
            continue
        if digest != f.sha256:
            hashes_ok = False
            problem(f"{store.uri(p)}: sha256 {digest} does not match the manifest's {f.sha256}")
            continue
        try:
            with p.open("rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                part_schema, rows = written_arrow_schema(meta), meta.num_rows
        except (pa.ArrowException, OSError) as exc:
            problem(f"{store.uri(p)}: not a readable Parquet file: {exc}")
            continue
        if rows != f.rows:
            problem(f"{store.uri(p)}: {rows} rows in its Parquet footer, manifest says {f.rows}")
        if schema is None:
            schema = part_schema
        elif not part_schema.equals(schema):
            problem(f"{store.uri(p)}: its schema differs from the first part's")
    if schema is not None and hashes_ok:
        recorded = mf.schema_without_source_types(manifest.schema)
        if mf.schema_to_json(schema) != recorded:
            problem(f"{store.uri(folder)}: the manifest's schema is not the Parquet files' schema")
        expected = mf.version_id(schema, [f.sha256 for f in manifest.files])
        if expected != manifest.version:
            problem(f"{store.uri(folder)}: the version id is not the digest of the schema and parts "
                    f"(recomputed {expected})")
    return schema


def read_parts(store: Any, manifest: Manifest, columns: list[str] | None, batch_rows: int,
               problems: list[str], strict: bool, progress: Callable[[int], None] | None = None,
               hashed: dict[str, tuple[str, int]] | None = None) -> Iterator[pa.RecordBatch]:
    """Check a version (:func:`check_files`), then stream its rows (only ``columns``), re-deriving
    its row checks on the way (store/integrity.py); contradictions are appended to ``problems``
    once the last row was read (``strict``: raised as :class:`IntegrityError`)."""
    check_files(store, manifest, problems, strict, progress, hashed)
    if problems:  # the bytes are not what the manifest describes: read nothing
        return
    yield from stream_parts(store, manifest, columns, batch_rows, problems, strict)


def stream_parts(store: Any, manifest: Manifest, columns: list[str] | None, batch_rows: int,
                 problems: list[str], strict: bool) -> Iterator[pa.RecordBatch]:
    """The rows of a version :func:`check_files` passed, with its row checks re-derived."""
    derive = RowChecks(manifest)
    need = derive.columns()
    read_cols = None if columns is None else list(dict.fromkeys([*columns, *need]))
    extra = columns is not None and len(read_cols or []) != len(columns)
    folder = store.version_dir(manifest.asset, manifest.partition, manifest.version)
    for f in manifest.files:
        with store.part_path(manifest, f).open("rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows, columns=read_cols):
                derive.add(batch)
                yield batch.select(columns) if extra else batch
    where = f"{store.uri(folder)}"
    found = derive.contradictions(where)
    if derive.rows != manifest.row_count:
        found.insert(0, f"{where}: {derive.rows} rows read, manifest says {manifest.row_count}")
    problems.extend(found)
    if found and strict:
        raise IntegrityError(f"{manifest.where}: " + "; ".join(found) + "; the version cannot be trusted")


def written_arrow_schema(meta: pq.FileMetaData) -> pa.Schema:
    """The Arrow schema the writer was given, as pyarrow stores it in the footer (``ARROW:schema``).

    Parquet's own schema names list items ``element`` where Arrow's say ``item`` (and map entries
    differently): the version id digests the writer's schema, so that is the one to compare.
    """
    raw = (meta.metadata or {}).get(b"ARROW:schema")
    if raw is None:
        return meta.schema.to_arrow_schema()
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))
    return schema.remove_metadata()
