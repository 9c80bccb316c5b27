"""Retention: delete published versions beyond a policy, never one something may still read.

``snapshot-platform gc --keep-last N [--keep-within D]`` keeps, per partition, the last N versions,
those created within D, and always: the partition's latest version, every version listed in the
snapshot lock of any MLflow run or behind a registered model version (:func:`pinned_versions`), and
every version created or *recorded again* within the grace period. Everything else is deleted.

The race with a publish. A publish whose data is a version already published writes nothing and
returns that version ("records it again"); a training run may then pin it. So a publish that finds
its version first writes a touch marker ``<root>/.touched/<asset>/<partition>/<version>.json`` and
then reads the manifest again (store/publish.py); gc deletes a version in this order:

1. skip it if its touch marker is younger than the grace period;
2. delete its manifest (a reader never sees half a version: without it the folder is no version);
3. read the touch marker again: if it was written since gc started, put the manifest back
   (create-if-absent) and keep the version: the publish read the manifest before step 2, so it
   returned this version;
4. otherwise delete its parts, the folder set aside first (local disk: one rename) and checked for a
   manifest a racing publish placed there meanwhile (then it is put back, not deleted).

A publish that reads the manifest after step 2 finds none and publishes the version anew (its own
parts, create-if-absent manifest). Either way no publish returns a version gc then deletes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from snapshot_platform.store import backends
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import STAGING, fs_path
from snapshot_platform.store.manifest import Manifest

TOUCHED = ".touched"
DEFAULT_GRACE = dt.timedelta(hours=1)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def touch_path(store: Any, asset: str, partition: str, version: str) -> Any:
    return store.root / TOUCHED / asset / partition / f"{version}.json"


def touch(store: Any, asset: str, partition: str, version: str) -> None:
    """Record that a publish has just found ``version`` already published and will return it."""
    p = touch_path(store, asset, partition, version)
    raw = json.dumps({"touched_at": _utc_now().isoformat()}).encode()
    if store.local:
        Path(str(p)).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(p)).with_name(f".{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, Path(str(p)))
    else:
        p.write_bytes(raw)


def touched_at(store: Any, asset: str, partition: str, version: str) -> dt.datetime | None:
    p = touch_path(store, asset, partition, version)
    if not store.local:
        p.fs.invalidate_cache(fs_path(p))
    try:
        return dt.datetime.fromisoformat(json.loads(p.read_bytes())["touched_at"])
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class RetentionItem:
    asset: str
    partition: str
    version: str
    created_at: str
    bytes: int
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"asset": self.asset, "partition": self.partition, "version": self.version,
                "created_at": self.created_at, "bytes": self.bytes}


def pinned_versions(tracking: Any) -> set[tuple[str, str, str]]:
    """(asset, partition, version) of every snapshot lock in the tracking server: every run's (deleted
    ones too) and every registered model version's run. A run without a lock is not a training run;
    a lock that exists but cannot be read stops gc (an error), never lets it guess."""
    from mlflow.entities import ViewType

    from snapshot_platform.training.lock import LOCK_NAME

    client = tracking.client()
    run_ids: set[str] = set()
    for exp in client.search_experiments(view_type=ViewType.ALL):
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                      page_token=token)
            run_ids.update(r.info.run_id for r in page)
            token = page.token
            if not token:
                break
    token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        run_ids.update(mv.run_id for mv in page if mv.run_id)
        token = page.token
        if not token:
            break
    pins: set[tuple[str, str, str]] = set()
    for run_id in sorted(run_ids):
        if LOCK_NAME not in {a.path for a in client.list_artifacts(run_id)}:
            continue
        for e in tracking.load_lock(run_id).snapshots:
            pins.add((e.asset, e.partition, e.version))
    return pins


def plan(store: Any, keep_last: int, keep_within: dt.timedelta | None, pinned: set[tuple[str, str, str]],
         now: dt.datetime, grace: dt.timedelta = DEFAULT_GRACE) -> list[RetentionItem]:
    """The versions the policy does not keep, oldest first per partition. A partition holding a
    manifest that cannot be believed is left alone (its latest version cannot be told)."""
    victims = []
    for asset in store.assets():
        for partition in store.partitions(asset):
            versions, bad = store.scan(asset, partition)
            if bad or not versions:
                continue
            keep = {m.version for m in versions[-max(keep_last, 1):]}  # the latest always
            for m in versions:
                created = dt.datetime.fromisoformat(m.created_at)
                touched = touched_at(store, asset, partition, m.version)
                if ((asset, partition, m.version) in pinned
                        or (keep_within is not None and created >= now - keep_within)
                        or created >= now - grace
                        or (touched is not None and touched >= now - grace)):
                    keep.add(m.version)
            victims += [RetentionItem(asset, partition, m.version, m.created_at, sum(f.bytes for f in m.files))
                        for m in versions if m.version not in keep]
    return victims


# test hook: called between the steps of deleting one version ("checked", "manifest_deleted")
_step: Callable[[str, RetentionItem], None] = lambda _name, _item: None


def delete_version(store: Any, item: RetentionItem, started: dt.datetime, grace: dt.timedelta) -> bool:
    """Delete one version (the order in the module's docstring); False when it was kept after all."""
    folder = store.version_dir(item.asset, item.partition, item.version)
    manifest_path = folder / mf.MANIFEST_NAME

    def recorded_since() -> bool:
        t = touched_at(store, item.asset, item.partition, item.version)
        return t is not None and t >= started - grace

    if recorded_since():
        return False
    _step("checked", item)
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        return False
    if store.local:
        os.unlink(str(manifest_path))
    else:
        manifest_path.fs.rm(fs_path(manifest_path))
        manifest_path.fs.invalidate_cache(fs_path(manifest_path))
    _step("manifest_deleted", item)
    if recorded_since():
        _restore(store, manifest_path, raw)
        return False
    if store.local:
        aside = Path(str(store.root)) / STAGING / f"gc-{uuid.uuid4().hex}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(str(folder), aside)
        except FileNotFoundError:
            return True
        if (aside / mf.MANIFEST_NAME).exists():  # a racing publish completed the version meanwhile
            os.rename(aside, str(folder))
            return False
        shutil.rmtree(aside, ignore_errors=True)
    else:
        folder.fs.rm(fs_path(folder), recursive=True)
        folder.fs.invalidate_cache(fs_path(folder))
    p = touch_path(store, item.asset, item.partition, item.version)
    if store.local:
        Path(str(p)).unlink(missing_ok=True)
    return True


def _restore(store: Any, manifest_path: Any, raw: bytes) -> None:
    if store.local:
        tmp = Path(str(manifest_path)).with_name(f"{mf.MANIFEST_NAME}.restore-{uuid.uuid4().hex}.tmp")
        tmp = Path(str(store.root)) / STAGING / tmp.name
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        try:
            os.link(tmp, str(manifest_path))
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    else:
        backends.create_exclusive(manifest_path.fs, fs_path(manifest_path), raw)


def apply_retention(store: Any, keep_last: int, keep_within: dt.timedelta | None, pinned: set[tuple[str, str, str]],
                    dry_run: bool = False, grace: dt.timedelta = DEFAULT_GRACE,
                    now: dt.datetime | None = None) -> list[RetentionItem]:
    """Plan and (unless ``dry_run``) delete; returns the planned items, ``deleted`` set on those deleted."""
    started = now or _utc_now()
    victims = plan(store, keep_last, keep_within, pinned, started, grace)
    if dry_run:
        return victims
    return [RetentionItem(**{**v.__dict__, "deleted": delete_version(store, v, started, grace)}) for v in victims]
