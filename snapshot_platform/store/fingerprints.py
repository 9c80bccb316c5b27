"""Source fingerprints recorded beside a write-once version: ``<version>/fingerprints/*.json``.

A snapshot with a ``change_probe`` records the probe's row as its manifest's ``source_fingerprint``.
When a later re-snapshot yields the same version (the same bytes) while the fingerprint moved (a row
updated and updated back bumps ``max(updated_at)``), the manifest cannot change: the new
fingerprint is written as a sidecar ``fingerprints/<UTC time>-<random>.json`` in the version folder
(``{"source_fingerprint": ..., "recorded_at": ..., "dagster_run_id": ...}``), and the newest sidecar
is the version's current fingerprint. Readers of the data ignore the folder; verification checks
that each sidecar is named so and is such a JSON object (store/verify.py), and nothing else sits there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from snapshot_platform.store.files import STAGING, file_names, fsync_dir
from snapshot_platform.store.manifest import Manifest

FINGERPRINTS_DIR = "fingerprints"
SIDECAR_NAME = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}\.json$")


def sidecar_problem(raw: bytes) -> str | None:
    """What is wrong with a sidecar's bytes; None when it is a fingerprint record."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("source_fingerprint"), dict):
        return "must be a JSON object with a source_fingerprint object"
    return None


def record(store: Any, manifest: Manifest, fingerprint: dict[str, Any], dagster_run_id: str | None = None) -> str:
    """Write a sidecar with ``fingerprint`` for ``manifest``'s version; returns its name."""
    now = dt.datetime.now(dt.timezone.utc)
    name = f"{now.strftime('%Y%m%dT%H%M%S%f')}Z-{uuid.uuid4().hex[:8]}.json"
    raw = (json.dumps({"source_fingerprint": fingerprint, "recorded_at": now.isoformat(),
                       "dagster_run_id": dagster_run_id}, indent=2) + "\n").encode()
    folder = store.version_dir(manifest.asset, manifest.partition, manifest.version) / FINGERPRINTS_DIR
    if store.local:  # written privately, then renamed into place: never a partial sidecar
        tmp = Path(str(store.root)) / STAGING / f"fingerprint-{uuid.uuid4().hex}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        Path(str(folder)).mkdir(exist_ok=True)
        os.rename(tmp, Path(str(folder)) / name)
        fsync_dir(Path(str(folder)))
    else:  # one PUT: an object appears whole or not at all
        (folder / name).write_bytes(raw)
    return name


def current(store: Any, manifest: Manifest) -> dict[str, Any] | None:
    """The version's current source fingerprint: its newest sidecar's, else its manifest's."""
    folder = store.version_dir(manifest.asset, manifest.partition, manifest.version) / FINGERPRINTS_DIR
    for name in reversed(file_names(folder)):
        if SIDECAR_NAME.match(name):
            raw = (folder / name).read_bytes()
            if sidecar_problem(raw) is None:
                return json.loads(raw)["source_fingerprint"]
    fp = manifest.source_fingerprint
    return dict(fp) if fp is not None else None
