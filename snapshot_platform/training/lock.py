"""``snapshot_lock.json``: the exact snapshot versions a training run used, logged with the run.

For each version: asset, partition, version id, its storage URI, row count, every file's sha256,
the query hash and the key. With the store, that is enough to load the very same bytes again and
to prove they are the same; ``reproduce`` and ``compare`` need nothing else from the run's data.
"""

from __future__ import annotations

import json
from typing import Any

LOCK_NAME = "snapshot_lock.json"
LOCK_FORMAT = 1


class LockError(ValueError):
    """A lock that cannot be used, or a stored version that does not match its lock."""


def lock_entry(manifest: dict[str, Any], uri: str, checks_overridden: list[str] | None = None) -> dict[str, Any]:
    return {
        "asset": manifest["asset"],
        "partition": manifest["partition"],
        "version": manifest["version"],
        "uri": uri,
        "row_count": manifest["row_count"],
        "files": [{k: f[k] for k in ("path", "sha256", "bytes", "rows")} for f in manifest["files"]],
        "query_sha256": manifest["query_sha256"],
        "key": list(manifest.get("key") or []),
        "window": manifest.get("window"),
        "created_at": manifest.get("created_at"),
        "checks_overridden": list(checks_overridden or []),
    }


def build_lock(
    model: str,
    model_partition: str | None,
    storage_url: str,
    entries: list[dict[str, Any]],
    override_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "format_version": LOCK_FORMAT,
        "model": model,
        "model_partition": model_partition,
        "storage_url": storage_url,
        "allow_failed_checks_reason": override_reason,
        "snapshots": entries,
    }


def dumps(lock: dict[str, Any]) -> str:
    return json.dumps(lock, indent=2, sort_keys=False, default=str) + "\n"


def loads(text: str | bytes, where: str = LOCK_NAME) -> dict[str, Any]:
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
        for k in ("asset", "partition", "version", "row_count", "files", "query_sha256"):
            if k not in e:
                raise LockError(f"{where}: snapshots[{i}] lacks {k!r}")
    return lock


def mismatches(entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """How a stored version's manifest differs from what the lock recorded (empty: the same version)."""
    where = f"{entry['asset']}/{entry['partition']} version {entry['version']}"
    problems = []
    if manifest["version"] != entry["version"]:
        problems.append(f"{where}: the store returned version {manifest['version']}")
    if manifest["row_count"] != entry["row_count"]:
        problems.append(f"{where}: {manifest['row_count']} rows, the lock says {entry['row_count']}")
    if manifest["query_sha256"] != entry["query_sha256"]:
        problems.append(f"{where}: query sha256 differs from the lock's")
    want = [(f["path"], f["sha256"]) for f in entry["files"]]
    got = [(f["path"], f["sha256"]) for f in manifest["files"]]
    if want != got:
        problems.append(f"{where}: file hashes differ from the lock's: {got} vs {want}")
    return problems
