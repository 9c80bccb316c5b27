"""``dg check defs`` loads the definitions from the project root, without Dagster's SupersessionWarning
(issue 14 §3; moved from unit/test_dg_project.py: it runs the dg CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def test_dg_check_defs_loads_the_definitions_from_the_project_root(tmp_path: Path) -> None:
    env = {**os.environ, "VIRTUAL_ENV": str(BIN.parent), "DAGSTER_HOME": str(tmp_path),
           "SNAPSHOT_PLATFORM_HOME": str(tmp_path / "home"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SNAPSHOT_PLATFORM_CATALOG", None)  # the demo catalog
    done = subprocess.run([str(BIN / "dg"), "check", "defs"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "All definitions loaded successfully" in out, out
    assert "SupersessionWarning" not in out, out
