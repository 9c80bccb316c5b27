"""The publish of a version to an object store: each part uploaded once, only if it is not there yet.

A part is written to a local temporary file (one at a time: local disk and memory hold at most one
part), hashed as it is written. When it closes, :class:`PartUploader`

1. writes a publish intent ``<root>/.intents/<uuid>.json`` naming it (before looking for it, as
   retention's race protocol requires: store/retention.py);
2. looks for ``<root>/parts/<sha[:2]>/<sha>.parquet``: there with the part's size, nothing is sent;
3. otherwise uploads the file straight to that key, create-if-absent (store/backends.py
   ``upload_exclusive``: the object appears whole or not at all); a concurrent publisher that
   created it first wins, with the same bytes (one that holds another size, damaged, is replaced);
4. deletes the temporary file.

Before the manifest is created (create-if-absent, store/backends.py) every intent is checked to be
still there; they are removed once the publish ends, whatever happened. Nothing is staged in the
bucket. On Linux the temporary file has no name from the moment it is opened (the upload reads it
through ``/proc/self/fd``), so not even a killed process leaves it behind; elsewhere it is removed
on every path but a kill. Plain library: no Dagster, no database.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, BinaryIO, Callable, Iterator

import pyarrow as pa

from snapshot_platform.store import backends, retention
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import fs_path
from snapshot_platform.store.writer import WrittenData, WrittenPart, storage_write_error, write_parts

TMP_PREFIX = "snapshot-part-"


def _temporary_part(folder: str | None) -> tuple[BinaryIO, str, str]:
    """A new local temporary file: (the file, the path to read it back by, its name for messages)."""
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet", dir=folder)
    f = os.fdopen(fd, "w+b")
    by_fd = f"/proc/self/fd/{fd}"
    if os.path.exists(by_fd):  # Linux: readable by its descriptor, so drop the name right away
        os.unlink(name)
        return f, by_fd, name
    return f, name, name


class PartUploader:
    """Writes one publish's parts to ``store`` (an object store); see the module docstring."""

    def __init__(self, store: Any):
        self.store = store
        self.fs = store.root.fs
        backends.backend_of(self.fs)  # refuse a backend without a conditional create before writing
        self.intents: list[Any] = []
        self._file: tuple[BinaryIO, str, str] | None = None

    def write(self, schema: pa.Schema, batches: Iterator[pa.RecordBatch], key: list[str] | None) -> WrittenData:
        return write_parts(batches, schema, self._open, self.store.settings, where=self._where, key=key,
                           part_done=self._upload)

    def _open(self, _name: str) -> BinaryIO:
        self._discard()
        self._file = _temporary_part(self.store.upload_tmp_dir)
        return self._file[0]

    def _where(self, name: str) -> str:
        if self._file is not None:
            shown = self._file[2]
        else:  # it could not be created
            shown = os.path.join(self.store.upload_tmp_dir or tempfile.gettempdir(), f"{TMP_PREFIX}*.parquet")
        return f"{shown} ({name} for {self.store.uri(self.store.root)})"

    def _upload(self, part: WrittenPart, raw: BinaryIO) -> None:
        assert self._file is not None
        try:
            self.intents.append(self._announce(part.sha256))
            dst = self.store.root / mf.part_path(part.sha256)
            try:
                size = self._size(fs_path(dst))
                if size == part.bytes:
                    return  # stored once already: nothing to send
                created = backends.upload_exclusive(self.fs, self._file[1], fs_path(dst), overwrite=size is not None)
                if not created and self._size(fs_path(dst)) != part.bytes:  # a damaged one won the race
                    backends.upload_exclusive(self.fs, self._file[1], fs_path(dst), overwrite=True)
            except Exception as exc:
                raise storage_write_error(exc, self.store.uri(dst)) from exc
        finally:
            self._discard()

    def _announce(self, sha: str) -> Any:
        try:
            return retention.write_intent(self.store, [sha])
        except Exception as exc:
            raise storage_write_error(exc, self.store.uri(self.store.root / retention.INTENTS)) from exc

    def _size(self, path: str) -> int | None:
        self.fs.invalidate_cache(path)
        try:
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def create_manifest(self, final: Any, raw: bytes, step: Callable[[str], None]) -> bool:
        """Create ``final``'s manifest only if absent, once every intent is checked (True: created);
        ``step("parts_placed")`` first (publish.py's test hook)."""
        target = fs_path(final / mf.MANIFEST_NAME)
        self.fs.invalidate_cache(target)
        if self.fs.exists(target):  # published since publish() looked: write nothing
            return False
        step("parts_placed")
        retention.check_intents(self.store, self.intents)
        return backends.create_exclusive(self.fs, target, raw)

    def _discard(self) -> None:
        if self._file is None:
            return
        f, path, name = self._file
        self._file = None
        f.close()
        if path == name:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Remove the temporary file and the intents (quietly: never hiding the error that brought us here)."""
        self._discard()
        retention.remove_intents(self.store, self.intents)
        self.intents = []
