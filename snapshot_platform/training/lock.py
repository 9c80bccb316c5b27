"""``snapshot_lock.json``: the exact snapshot versions a training run used, logged with the run.

For each version: asset, partition, version id, its storage URI, row count, every file's sha256,
the query hash and the key. With the store, that is enough to load the very same bytes again and
to prove they are the same; ``reproduce`` and ``compare`` need nothing else from the run's data.

One reader (:meth:`SnapshotLock.from_json`) and one writer (:meth:`SnapshotLock.to_json`); the
JSON is the same as before the lock was typed, and keys this release does not know are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from snapshot_platform.store.manifest import FileEntry, JsonObject, Manifest

LOCK_NAME = "snapshot_lock.json"
LOCK_FORMAT = 1


class LockError(ValueError):
    """A lock that cannot be used, or a stored version that does not match its lock."""


@dataclass(frozen=True, kw_only=True)
class LockEntry(JsonObject):
    """One snapshot version a run trained on (``snapshots[]``)."""

    asset: str
    partition: str
    version: str
    row_count: int
    files: tuple[FileEntry, ...]
    """Every part's path, sha256, bytes and rows, as the manifest listed them."""
    query_sha256: str
    uri: str | None = None
    """Where the version was (its folder's URI)."""
    key: tuple[str, ...] = ()
    window: Mapping[str, Any] | None = None
    created_at: str | None = None
    checks_overridden: tuple[str, ...] = ()
    """Blocking checks the version failed that the run's override reason let through."""

    _FIELDS = ("asset", "partition", "version", "uri", "row_count", "files", "query_sha256", "key", "window",
               "created_at", "checks_overridden")

    @property
    def where(self) -> str:
        return f"{self.asset}/{self.partition} version {self.version}"

    def _value(self, name: str) -> Any:
        v = getattr(self, name)
        if name == "files":
            return [f.as_dict() for f in v]
        if name in ("key", "checks_overridden"):
            return list(v)
        return v

    @classmethod
    def of(cls, manifest: Manifest, uri: str, checks_overridden: list[str] | None = None) -> "LockEntry":
        """The entry for a version about to be trained on."""
        return cls(asset=manifest.asset, partition=manifest.partition, version=manifest.version, uri=uri,
                   row_count=manifest.row_count,
                   files=tuple(FileEntry(path=f.path, sha256=f.sha256, bytes=f.bytes, rows=f.rows)
                               for f in manifest.files),
                   query_sha256=manifest.query_sha256, key=tuple(manifest.key or ()), window=manifest.window,
                   created_at=manifest.created_at, checks_overridden=tuple(checks_overridden or ()))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LockEntry":
        known, rest = cls._split(d)
        known["files"] = tuple(FileEntry.from_dict(f) if isinstance(f, Mapping) else f for f in d["files"])
        known["key"] = tuple(d.get("key") or ())
        known["checks_overridden"] = tuple(d.get("checks_overridden") or ())
        return cls(**known, **rest)

    def mismatches(self, manifest: Manifest) -> list[str]:
        """How a stored version's manifest differs from what the lock recorded (empty: the same version)."""
        where = self.where
        problems = []
        if manifest.version != self.version:
            problems.append(f"{where}: the store returned version {manifest.version}")
        if manifest.row_count != self.row_count:
            problems.append(f"{where}: {manifest.row_count} rows, the lock says {self.row_count}")
        if manifest.query_sha256 != self.query_sha256:
            problems.append(f"{where}: query sha256 differs from the lock's")
        want = [(f.path, f.sha256) for f in self.files]
        got = [(f.path, f.sha256) for f in manifest.files]
        if want != got:
            problems.append(f"{where}: file hashes differ from the lock's: {got} vs {want}")
        return problems


@dataclass(frozen=True, kw_only=True)
class SnapshotLock(JsonObject):
    """``snapshot_lock.json``: the run's model and every snapshot version it trained on."""

    format_version: int = LOCK_FORMAT
    model: str
    model_partition: str | None = None
    storage_url: str | None = None
    """The store the run read (``reproduce`` names it when a version is missing)."""
    allow_failed_checks_reason: str | None = None
    snapshots: tuple[LockEntry, ...]

    _FIELDS = ("format_version", "model", "model_partition", "storage_url", "allow_failed_checks_reason",
               "snapshots")

    def _value(self, name: str) -> Any:
        if name == "snapshots":
            return [e.as_dict() for e in self.snapshots]
        return getattr(self, name)

    def to_json(self) -> str:
        """The one writer."""
        return json.dumps(self.as_dict(), indent=2, sort_keys=False, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = LOCK_NAME) -> "SnapshotLock":
        """The one reader: a :class:`LockError` names ``where`` and the entry."""
        try:
            lock = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LockError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(lock, dict) or lock.get("format_version") != LOCK_FORMAT:
            raise LockError(f"{where}: not a snapshot lock of format {LOCK_FORMAT}")
        entries = lock.get("snapshots")
        if not isinstance(entries, list) or not entries:
            raise LockError(f"{where}: lists no snapshot versions")
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise LockError(f"{where}: snapshots[{i}] must be an object")
            for k in ("asset", "partition", "version", "row_count", "files", "query_sha256"):
                if k not in e:
                    raise LockError(f"{where}: snapshots[{i}] lacks {k!r}")
            if not isinstance(e["files"], list) or not all(
                    isinstance(f, dict) and all(k in f for k in ("path", "sha256")) for f in e["files"]):
                raise LockError(f"{where}: snapshots[{i}].files must list {{path, sha256, ...}} entries")
        known, rest = cls._split(lock)
        known["snapshots"] = tuple(LockEntry.from_dict(e) for e in entries)
        return cls(**known, **rest)
