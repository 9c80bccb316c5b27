"""The project is a ``dg`` project: the ``[tool.dg]`` keys name the same code location as
``workspace.yaml`` and ``-m snapshot_platform.definitions`` (issue 14 §3). ``dg check defs`` itself:
integration/test_dg_check_defs.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dg_project_names_the_same_code_location_as_the_workspace() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dg = pyproject["tool"]["dg"]
    assert dg["directory_type"] == "project"
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert dg["project"]["code_location_target_module"] == workspace["module_name"] == "snapshot_platform.definitions"
    assert dg["project"]["code_location_name"] == workspace["location_name"]
    assert any(d.startswith("dagster-dg-cli==") for d in pyproject["project"]["dependencies"])
