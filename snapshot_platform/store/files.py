"""Paths and listings on any storage backend (local disk or an fsspec URL), and streaming hashes.

Shared by the store's read, verify, publish and gc code. Plain library: no Dagster, no database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import posixpath
from pathlib import Path
from typing import Any, Callable, Iterable

from upath import UPath

STAGING = ".staging"  # <root>/.staging/<uuid>/: private, in-flight writes (store/gc.py reclaims them)
# a local publisher's manifest, written beside the folder's files and linked into place (publish.py)
MANIFEST_TMP_PREFIX = ".manifest-"
_HASH_CHUNK = 8 * 1024 * 1024


def is_local(p: UPath) -> bool:
    return getattr(p, "protocol", "") in ("", "file", "local")


def fs_path(p: UPath) -> str:
    return p.path


def safe_component(value: str, what: str) -> str:
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


def _entries(p: UPath, folders_only: bool) -> list[str]:
    """Names of the entries directly in ``p`` (only its sub-folders with ``folders_only``), sorted;
    none when ``p`` does not exist."""
    if is_local(p):
        try:
            return sorted(c.name for c in p.iterdir() if not folders_only or c.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs, path = p.fs, fs_path(p)
    # fsspec object stores cache listings for the life of the process (s3fs: with no expiry), so a
    # long-lived process would never see versions published by others: list afresh every time.
    fs.invalidate_cache(path)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = {posixpath.basename(e["name"].rstrip("/")) for e in entries
             if not folders_only or e.get("type") == "directory"}
    return sorted(n for n in names if n)


def listdir(p: UPath) -> list[UPath]:
    """The sub-folders of ``p``; none when ``p`` does not exist."""
    return [p / name for name in _entries(p, folders_only=True)]


def file_names(p: UPath) -> list[str]:
    """Names of every entry (files and folders) directly in ``p``."""
    return _entries(p, folders_only=False)


# where each fsspec backend's listing already carries the modification time (s3fs, adlfs, gcsfs,
# local/memory): reading it from the listing saves a HEAD request per file
_LISTED_TIME_KEYS = ("LastModified", "last_modified", "updated", "mtime", "created")


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)


def modified_time(fs: Any, name: str, info: dict[str, Any]) -> dt.datetime:
    """When the object ``name`` was last written (UTC), from its listing entry ``info`` if it says."""
    for k in _LISTED_TIME_KEYS:
        v = info.get(k)
        if isinstance(v, dt.datetime):
            return _utc(v)
        if isinstance(v, str) and v:
            return _utc(dt.datetime.fromisoformat(v.replace("Z", "+00:00")))
        if isinstance(v, (int, float)) and k == "mtime":
            return dt.datetime.fromtimestamp(v, dt.timezone.utc)
    return _utc(fs.modified(name))


def fsync_file(p: Path) -> None:
    with open(p, "rb+") as f:
        os.fsync(f.fileno())


def fsync_all(sync: Callable[[Path], None], paths: Iterable[Path]) -> None:
    """``sync`` every path, several at once: the file system commits concurrent fsyncs together
    (185 parts of 300 KB on ext4: 0.13 s one after another, 0.02 s eight at a time). Every one has
    completed when this returns; the first error is raised."""
    todo = list(paths)
    if len(todo) < 2:
        for p in todo:
            sync(p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(todo)), thread_name_prefix="snapshot-fsync") as pool:
        for _ in pool.map(sync, todo):
            pass


def fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
