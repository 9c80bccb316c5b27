"""Reclaim the space crashed writers left behind, without touching anything a reader can see.

A writer killed mid-snapshot leaves its private staging folder (``<root>/.staging/<uuid>/``) and,
on local disk, folders set aside as ``.staging/abandoned-<uuid>``. Neither is ever read. It also
finds publish intents (``<root>/.intents/``, store/retention.py) a killed publisher left. This
removes those whose newest file is older than a threshold (a writer still at work keeps writing
its current part, so its folder stays young); a writer slower than the threshold then fails at
publish, cleanly, and publishes nothing.

Version folders without a manifest (a writer of an earlier release, which kept the parts in the
version folder, died before writing its manifest) are reported, never removed: they are invisible
to readers, and the next publisher of the same version sets them aside. Shared parts no manifest
references and no intent lists, written longer ago than the threshold (a killed publisher's), are
deleted by retention's race-safe sweep (store/retention.py ``sweep_parts``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from upath import UPath

from snapshot_platform.store import manifest as mf
from snapshot_platform.store import retention
from snapshot_platform.store.files import STAGING, file_names, fs_path, is_local, listdir, modified_time
from snapshot_platform.store.store import SnapshotStore


@dataclass(frozen=True)
class Leftover:
    kind: str  # "staging", "intent", "unreferenced_part" (removable when stale), "incomplete_version" (reported)
    uri: str
    files: int
    bytes: int
    newest: str | None  # ISO time of the newest file
    age_s: float | None
    stale: bool = False  # a staging folder idle for longer than the threshold
    removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entries(folder: UPath) -> Iterator[tuple[bool, int, dt.datetime]]:
    """(is a file, size, modified) of ``folder`` (on local disk) and of every file under it."""
    if is_local(folder):
        root = Path(str(folder))
        yield False, 0, dt.datetime.fromtimestamp(root.stat().st_mtime, dt.timezone.utc)
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                st = (Path(dirpath) / n).stat()
                yield True, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
        return
    fs = folder.fs
    path = fs_path(folder)
    fs.invalidate_cache(path)
    for name, info in fs.find(path, detail=True).items():
        if info.get("type") == "directory":
            continue
        yield True, int(info.get("size") or 0), modified_time(fs, name, info)


def _leftover(store: SnapshotStore, kind: str, folder: UPath, now: dt.datetime) -> Leftover:
    count = size = 0
    newest: dt.datetime | None = None
    for is_file, n, modified in _entries(folder):
        count, size = count + is_file, size + n
        newest = modified if newest is None or modified > newest else newest
    return Leftover(kind, store.uri(folder), count, size, newest.isoformat() if newest else None,
                    (now - newest).total_seconds() if newest else None)


def _intents(store: SnapshotStore, now: dt.datetime) -> list[tuple[Leftover, UPath]]:
    """The publish intents (store/retention.py): a young one belongs to a publish at work."""
    out = []
    folder = store.root / retention.INTENTS
    for name in file_names(folder):
        if not name.endswith(".json"):
            continue
        p = folder / name
        try:
            if store.local:
                st = Path(str(p)).stat()
                size, modified = st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
            else:
                info = p.fs.info(fs_path(p))
                size, modified = int(info.get("size") or 0), modified_time(p.fs, fs_path(p), info)
        except FileNotFoundError:  # its publish finished meanwhile
            continue
        out.append((Leftover("intent", store.uri(p), 1, size, modified.isoformat(),
                             (now - modified).total_seconds()), p))
    return out


def _find(store: SnapshotStore, now: dt.datetime) -> list[tuple[Leftover, UPath]]:
    found = [(_leftover(store, "staging", d, now), d) for d in listdir(store.root / STAGING)]
    found += _intents(store, now)
    for asset in store.assets():
        for partition in store.partitions(asset):
            for d in listdir(store.partition_dir(asset, partition)):
                if d.name.startswith(".") or (d / mf.MANIFEST_NAME).exists():
                    continue
                found.append((_leftover(store, "incomplete_version", d, now), d))
    # an object store has no empty folders: a prefix listed with no object under it (a listing
    # that lags a delete) holds nothing to reclaim
    found = [(item, d) for item, d in found if item.files or is_local(d)]
    return sorted(found, key=lambda x: -(x[0].age_s or 0.0))


def collect_garbage(store: SnapshotStore, older_than: dt.timedelta, dry_run: bool = False,
                    now: dt.datetime | None = None) -> list[Leftover]:
    """Every staging folder, publish intent and version folder without a manifest, oldest first; the
    staging folders and intents idle for longer than ``older_than`` are marked stale and, unless
    ``dry_run``, removed; then the shared parts no manifest references and no intent lists, written
    longer ago than ``older_than``, are swept (store/retention.py), listed last.

    ``older_than`` must be longer than the longest snapshot a writer may take.
    """
    if older_than <= dt.timedelta(0):
        raise ValueError("older_than must be positive: a younger staging folder may belong to a writer at work")
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for item, folder in _find(store, now):
        if item.kind in ("staging", "intent") and item.age_s is not None and item.age_s > older_than.total_seconds():
            item = replace(item, stale=True)
            if not dry_run and item.kind == "intent":
                retention.remove_intent(store, folder)  # its parts become sweepable (retention)
                item = replace(item, removed=True)
            elif not dry_run:
                store._remove(folder, quiet=False)
                item = replace(item, removed=True)
        out.append(item)
    # shared parts no manifest references and no intent lists, written longer ago than older_than
    # (a killed publisher's, once its intent is gone): the race-safe sweep of store/retention.py; a
    # manifest that cannot say which parts it references stops it (gc --keep-last reports why)
    sweep = retention.sweep_parts(store, now, older_than, dry_run=dry_run)
    for sha, size in zip(sweep.parts, sweep.sizes):
        out.append(Leftover("unreferenced_part", store.uri(store.root / mf.part_path(sha)), 1, size, None, None,
                            stale=True, removed=not dry_run))
    return out
