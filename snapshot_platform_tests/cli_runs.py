"""Run ``dagster asset materialize`` as a user would, for the source engine tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from snapshot_platform.store.manifest import Manifest

BIN = Path(sys.executable).parent


def dagster_materialize(
    catalog: Path, env: Any, assets: list[str], partition: str, timeout: float = 240, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``dagster asset materialize -m snapshot_platform.definitions --select ... --partition ...``.

    ``env`` is the ``platform_env`` fixture (storage, homes and DAGSTER_HOME in tmp_path).
    """
    environ = {
        **os.environ,
        "SNAPSHOT_PLATFORM_CATALOG": str(catalog),
        "SNAPSHOT_PLATFORM_STORAGE_URL": str(env.storage),
        "SNAPSHOT_PLATFORM_HOME": str(env.home),
        "DAGSTER_HOME": str(env.dagster_home),
        **extra_env,
    }
    return subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
         "--select", ",".join(f"snapshots/{a}" for a in assets), "--partition", partition],
        env=environ, capture_output=True, text=True, timeout=timeout,
    )


def published_manifests(storage: Path, name: str, partition: str) -> list[Manifest]:
    folder = storage / "snapshots" / name / partition
    return [Manifest.from_json(p.read_bytes(), str(p)) for p in sorted(folder.glob("*/manifest.json"))]


def files_containing(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle`` (utf-8), SQLite databases included."""
    raw = needle.encode()
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            try:
                if raw in p.read_bytes():
                    found.append(str(p))
            except OSError:
                pass
    return found


def step_failures(dagster_home: Path) -> dict[str, str]:
    """Step key → the error text of its STEP_FAILURE, read from the instance's event log (what the UI shows).

    The console output of ``dagster asset materialize`` is no record of every step: a step subprocess's
    last lines reach it through ``tail -F``, which Dagster stops without waiting for it to catch up
    (dagster-io/dagster#23336), so on a busy machine a step's failure can be missing from the console
    while the event log has it.
    """
    from dagster import DagsterEventType, DagsterInstance

    failures: dict[str, str] = {}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in instance.get_runs():
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
                event = entry.dagster_event
                error = event.step_failure_data.error
                failures[event.step_key] = error.to_string() if error else ""
    return failures
