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
4. otherwise delete its folder, set aside first (local disk: one rename) and checked for a manifest a
   racing publish placed there meanwhile (then it is put back, not deleted); on object stores a
   format 3 folder's other objects (fingerprints) are deleted by name, never its manifest key, and a
   manifest found there afterwards keeps the version. (A folder of the earlier layout, holding its
   parts, is deleted recursively there: the residual race docs/storage.md names.)

A publish that reads the manifest after step 2 finds none and publishes the version anew (its own
parts, create-if-absent manifest). Either way no publish returns a version gc then deletes.

Shared parts (format 3 manifests reference ``<root>/parts/<sha256[:2]>/<sha256>.parquet``, one file
per content, shared across versions and partitions). Deleting a version deletes its manifest (and
folder) as above; its parts go afterwards, in one sweep over the root (:func:`sweep_parts`), and only
those no manifest references any more. The race: a publish may find a part present, skip writing
it, and create its manifest just after gc decided the part was unreferenced. So:

- a publish writes an *intent* ``<root>/.intents/<uuid>.json`` listing a part *before* it looks
  whether that part is stored: on local disk one intent listing every part, written once they are
  staged (store/publish.py); on object stores one intent per part, written as the part's local
  file closes and before its lookup and upload (store/upload.py). It places the parts that are
  absent (create-if-absent), checks that each of its intents still exists, creates its manifest,
  and deletes its intents last;
- the sweep lists the parts and every manifest, and takes as candidates the parts no manifest
  references, no intent lists, and not written within the grace period; it moves each candidate
  *aside* (under ``.staging/``: locally one rename, on object stores a copy and a delete), so that
  from then on a publish finds it absent and places its own copy; then it reads the intents
  **and then** lists the manifests again, puts back (create-if-absent) every candidate either
  names, and deletes the rest.

Why no publish can end up referencing a deleted part: take a publish whose manifest references a
part P that the sweep deleted. P was not in an intent when the sweep read them (at time r), nor in a
manifest listed after r. Take the intent naming P (the one listing every part, or P's own): if the
publish wrote it after r, it looked for P after that, so after P was moved aside, found it absent
and placed its own copy. If before r, that intent was still there at r (intents are written once,
never rewritten, and deleted only after the manifest is created, which was not yet there when the
listing after r started; one gc removed as stale is never written again, and the check before the
manifest finds it gone). Either case contradicts the deletion. Per-part intents keep this per part:
what matters for P is only that its intent exists from before P's lookup until the manifest. A publisher that crashes leaves
its intent, which protects its parts until ``snapshot-platform gc`` removes intents idle for longer
than ``--older-than``; a publish whose intent was removed so (stalled that long) fails before its
manifest. While a part is aside, a version published during the sweep that reuses it reads it as
missing for that moment (an integrity error on read, never a wrong row); the part is back when the
sweep ends.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from snapshot_platform.store import backends
from snapshot_platform.store import manifest as mf
from snapshot_platform.store.files import STAGING, file_names, fs_path, listdir, modified_time
from snapshot_platform.store.manifest import Manifest, ManifestError

TOUCHED = ".touched"
INTENTS = ".intents"  # <root>/.intents/<uuid>.json: the parts a publish in progress will reference
DEFAULT_GRACE = dt.timedelta(hours=1)
log = logging.getLogger(__name__)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def touch_path(store: Any, asset: str, partition: str, version: str) -> Any:
    return store.root / TOUCHED / asset / partition / f"{version}.json"


def touch(store: Any, asset: str, partition: str, version: str) -> None:
    """Record that a publish has just found ``version`` already published and will return it."""
    _put_whole(store, touch_path(store, asset, partition, version),
               json.dumps({"touched_at": _utc_now().isoformat()}).encode())


def _put_whole(store: Any, p: Any, raw: bytes) -> None:
    """Write a small file that a reader sees whole or not at all: locally written beside it under a
    temporary name and renamed (fsynced; the temporary file never left behind); one PUT elsewhere."""
    if not store.local:
        p.write_bytes(raw)
        return
    target = Path(str(p))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def touched_at(store: Any, asset: str, partition: str, version: str) -> dt.datetime | None:
    p = touch_path(store, asset, partition, version)
    if not store.local:
        p.fs.invalidate_cache(fs_path(p))
    try:
        return dt.datetime.fromisoformat(json.loads(p.read_bytes())["touched_at"])
    except FileNotFoundError:
        return None


def write_intent(store: Any, shas: list[str]) -> Any:
    """Announce the parts a publish is about to reference (the protocol in the module docstring)."""
    p = store.root / INTENTS / f"{uuid.uuid4().hex}.json"
    _put_whole(store, p, json.dumps({"created_at": _utc_now().isoformat(), "parts": sorted(set(shas))}).encode())
    return p


def check_intent(store: Any, p: Any) -> None:
    """Refuse to create a manifest once gc removed this publish's intent as stale (it stalled for
    longer than gc's ``--older-than``): its parts may be gone."""
    if not store.local:
        p.fs.invalidate_cache(fs_path(p))
    if not p.exists():
        raise OSError(errno.ENOENT, "the publish's intent was removed by gc --older-than while the publish "
                      "stalled; nothing published", store.uri(p))


def remove_intent(store: Any, p: Any) -> None:
    try:
        if store.local:
            Path(str(p)).unlink(missing_ok=True)
        else:
            p.fs.rm(fs_path(p))
            p.fs.invalidate_cache(fs_path(p))
    except FileNotFoundError:
        pass


def check_intents(store: Any, intents: list[Any]) -> None:
    """:func:`check_intent` for several intents of one publish, with one listing of ``.intents/``."""
    folder = store.root / INTENTS
    if not store.local:
        folder.fs.invalidate_cache(fs_path(folder))
    present = set(file_names(folder)) if intents else set()
    for p in intents:
        if p.name not in present:
            check_intent(store, p)  # gone from the listing: raises (unless it is there after all)


def remove_intents(store: Any, intents: list[Any]) -> None:
    """Remove a publish's intents (several in one request where the store can); never raises: a
    leftover intent only delays the sweep of its parts until gc finds it stale."""
    if not intents:
        return
    try:
        if store.local:
            for p in intents:
                remove_intent(store, p)
        else:
            paths = [fs_path(p) for p in intents]
            try:
                store.root.fs.rm(paths)
            finally:
                for path in paths:
                    store.root.fs.invalidate_cache(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # cleanup must never hide the error that brought us here
        log.warning("could not remove the publish intents under %s: %s",
                    store.uri(store.root / INTENTS), exc)


def intended_parts(store: Any) -> set[str]:
    """Every part (sha256) an intent of a publish in progress lists. An intent that cannot be read
    stops the sweep (an error): it may name a part about to be referenced."""
    folder = store.root / INTENTS
    out: set[str] = set()
    for name in file_names(folder):
        if not name.endswith(".json"):
            continue
        try:
            raw = (folder / name).read_bytes()
        except FileNotFoundError:  # its publish finished meanwhile
            continue
        try:
            parts = json.loads(raw)["parts"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{store.uri(folder / name)}: not a publish intent ({exc}); "
                                "no part was deleted") from None
        out.update(str(s) for s in parts)
    return out


def referenced_parts(store: Any, skip: set[tuple[str, str, str]] = frozenset()) -> set[str]:
    """The sha256 of every file every manifest in the root lists (any format, any partition), but
    those of the versions in ``skip``. A manifest that is not even JSON with a files list stops the
    sweep (an error)."""
    out: set[str] = set()
    for asset in store.assets():
        for partition in store.partitions(asset):
            for d in listdir(store.partition_dir(asset, partition)):
                if (asset, partition, d.name) in skip:
                    continue
                try:
                    raw = (d / mf.MANIFEST_NAME).read_bytes()
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    continue
                try:
                    out.update(f["sha256"] for f in json.loads(raw)["files"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ManifestError(f"{store.uri(d / mf.MANIFEST_NAME)}: cannot tell which parts it "
                                        f"references ({exc}); no part was deleted") from None
    return out


@dataclass(frozen=True)
class StoredPart:
    sha256: str
    path: Any  # UPath of the part
    bytes: int
    modified: dt.datetime


def stored_parts(store: Any) -> list[StoredPart]:
    """Every shared part under ``<root>/parts/`` (files named ``<sha256>.parquet``)."""
    base = store.root / mf.PARTS_DIR
    out = []
    if store.local:
        for d in sorted(Path(str(base)).glob("??")):
            for f in sorted(d.glob("*.parquet")):
                st = f.stat()
                out.append(StoredPart(f.stem, base / d.name / f.name, st.st_size,
                                      dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)))
        return out
    fs = base.fs
    fs.invalidate_cache(fs_path(base))
    try:
        found = fs.find(fs_path(base), detail=True)
    except FileNotFoundError:
        return []
    for name, info in sorted(found.items()):
        stem = posixpath.basename(name)
        if info.get("type") == "directory" or not stem.endswith(".parquet"):
            continue
        rel = posixpath.relpath(name, fs_path(base))
        out.append(StoredPart(stem[: -len(".parquet")], base / rel, int(info.get("size") or 0),
                              modified_time(fs, name, info)))
    return out


@dataclass(frozen=True)
class Sweep:
    """What :func:`sweep_parts` deleted (or, dry, would delete)."""

    parts: tuple[str, ...] = ()
    bytes: int = 0
    sizes: tuple[int, ...] = ()
    """Each part's bytes, in the order of ``parts``."""
    skipped: str | None = None
    """Why no part was deleted: a manifest or intent that does not say which parts it references."""


# test hook of the sweep: called with "aside" once the candidates are moved aside
_sweep_step: Callable[[str], None] = lambda _name: None


def sweep_parts(store: Any, started: dt.datetime, grace: dt.timedelta, dry_run: bool = False,
                dropping: set[tuple[str, str, str]] | None = None) -> Sweep:
    """Delete the shared parts no manifest references and no intent lists, not written within
    ``grace`` of ``started`` (the protocol in the module docstring). ``dry_run`` deletes nothing
    and reports what would go once the versions ``dropping`` ((asset, partition, version) a dry run
    would delete) were gone."""
    parts = stored_parts(store)
    if not parts:
        return Sweep()
    try:
        return _sweep(store, parts, started, grace, dry_run, dropping or set())
    except ManifestError as exc:  # cannot tell what is referenced: delete nothing, say why
        return Sweep(skipped=str(exc))


def _sweep(store: Any, parts: list[StoredPart], started: dt.datetime, grace: dt.timedelta, dry_run: bool,
           dropping: set[tuple[str, str, str]]) -> Sweep:
    keep = intended_parts(store) | referenced_parts(store, skip=dropping)
    candidates = [p for p in parts if p.sha256 not in keep and p.modified < started - grace]
    if dry_run or not candidates:
        return _swept(candidates)
    aside_dir = store.root / STAGING / f"gc-parts-{uuid.uuid4().hex}"
    aside: list[tuple[StoredPart, Any]] = []
    try:
        for p in candidates:
            aside.append((p, _move_aside(store, p, aside_dir)))
        _sweep_step("aside")
        # the intents first, then the manifests: this order is what the proof above needs
        keep = intended_parts(store)
        keep |= referenced_parts(store)
    except BaseException:  # cannot tell any more what is referenced: every part goes back
        for p, moved in aside:
            if moved is not None:
                _put_back(store, moved, p.path)
        raise
    deleted = []
    for p, moved in aside:
        if moved is None:
            continue
        if p.sha256 in keep:
            _put_back(store, moved, p.path)
        else:
            deleted.append(p)
    if store.local:
        shutil.rmtree(str(aside_dir), ignore_errors=True)
    else:
        backends.remove_tree(aside_dir.fs, fs_path(aside_dir))
    return _swept(deleted)


def _swept(parts: list[StoredPart]) -> Sweep:
    return Sweep(tuple(p.sha256 for p in parts), sum(p.bytes for p in parts), tuple(p.bytes for p in parts))


def _move_aside(store: Any, p: StoredPart, aside_dir: Any) -> Any:
    """Move a part out of ``parts/`` (None when it is gone already)."""
    dst = aside_dir / f"{p.sha256}.parquet"
    if store.local:
        Path(str(aside_dir)).mkdir(parents=True, exist_ok=True)
        try:
            os.rename(str(p.path), str(dst))
        except FileNotFoundError:
            return None
        return dst
    fs = store.root.fs
    try:
        backends.copy_object(fs, fs_path(p.path), fs_path(dst), p.bytes)
    except FileNotFoundError:
        return None
    fs.rm(fs_path(p.path))
    fs.invalidate_cache(fs_path(p.path))
    return dst


def _put_back(store: Any, moved: Any, target: Any) -> None:
    """Restore a part moved aside, unless a publish placed its own copy meanwhile (create-if-absent)."""
    if store.local:
        try:
            os.link(str(moved), str(target))
        except FileExistsError:
            pass
        return
    fs = store.root.fs
    fs.invalidate_cache(fs_path(target))
    if not fs.exists(fs_path(target)):
        backends.copy_object(fs, fs_path(moved), fs_path(target))


@dataclass(frozen=True)
class RetentionItem:
    asset: str
    partition: str
    version: str
    created_at: str
    bytes: int  # the version's parts (shared ones too: what it holds, not what deleting it frees)
    deleted: bool = False
    shared: bool = False  # format 3: its parts are shared, freed by the sweep once unreferenced

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
            victims += [RetentionItem(asset, partition, m.version, m.created_at, sum(f.bytes for f in m.files),
                                      shared=m.shared_parts)
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
    elif item.shared:
        # a format 3 folder holds its manifest and fingerprints only: delete the fingerprints by
        # name, never a manifest a racing publish has created since (then the version stays)
        fs = folder.fs
        fs.invalidate_cache(fs_path(folder))
        try:
            names = [n for n in fs.find(fs_path(folder)) if posixpath.basename(n) != mf.MANIFEST_NAME]
        except FileNotFoundError:
            names = []
        if names:
            fs.rm(names)
        fs.invalidate_cache(fs_path(folder))
        if fs.exists(fs_path(manifest_path)):
            return False
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


@dataclass(frozen=True)
class Retention:
    """What :func:`apply_retention` did (or, dry, would do)."""

    items: list[RetentionItem]
    """The versions the policy does not keep; ``deleted`` set on those deleted."""
    sweep: Sweep
    """The shared parts deleted (dry: that would be) once no manifest referenced them."""
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        """Bytes freed (dry: that would be): version folders holding their own parts, and swept parts."""
        own = sum(i.bytes for i in self.items if (i.deleted or self.dry_run) and not i.shared)
        return own + self.sweep.bytes


def apply_retention(store: Any, keep_last: int, keep_within: dt.timedelta | None, pinned: set[tuple[str, str, str]],
                    dry_run: bool = False, grace: dt.timedelta = DEFAULT_GRACE,
                    now: dt.datetime | None = None) -> Retention:
    """Plan and (unless ``dry_run``) delete the versions, then sweep the shared parts no manifest
    references any more (:func:`sweep_parts`)."""
    started = now or _utc_now()
    victims = plan(store, keep_last, keep_within, pinned, started, grace)
    if dry_run:
        dropping = {(v.asset, v.partition, v.version) for v in victims}
        return Retention(victims, sweep_parts(store, started, grace, dry_run=True, dropping=dropping), True)
    items = [RetentionItem(**{**v.__dict__, "deleted": delete_version(store, v, started, grace)}) for v in victims]
    return Retention(items, sweep_parts(store, started, grace))
