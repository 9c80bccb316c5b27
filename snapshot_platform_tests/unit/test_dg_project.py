"""The project is a ``dg`` project: ``dg check defs`` loads the definitions from the project root,
without Dagster's SupersessionWarning, and the ``[tool.dg]`` keys name the same code location as
``workspace.yaml`` and ``-m snapshot_platform.definitions`` (issue 14 §3)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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


def test_dg_project_names_the_same_code_location_as_the_workspace() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dg = pyproject["tool"]["dg"]
    assert dg["directory_type"] == "project"
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert dg["project"]["code_location_target_module"] == workspace["module_name"] == "snapshot_platform.definitions"
    assert dg["project"]["code_location_name"] == workspace["location_name"]
    assert any(d.startswith("dagster-dg-cli==") for d in pyproject["project"]["dependencies"])
