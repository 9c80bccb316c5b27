"""``snapshot-platform report NAME``: one self-contained HTML page (snapshot_platform/html_report.py).

On a home with four partitions (one failing its blocking check) and a model run in MLflow
(ui_state.py): the page holds each partition's version, marks the failed check on the failing
partition, names and links the run; it needs no network (images are data: URIs, the only links go to
the MLflow UI); a version that does not verify makes it exit 1 and says so; an unknown name exits 2.
Headless Chromium renders it to build/screenshots/report.png (README, "Screenshots")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from snapshot_platform_tests import ui_state
from snapshot_platform_tests.browser import SCREENSHOTS, chromium_screenshot

CLI = [sys.executable, "-m", "snapshot_platform.cli"]


def report(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "report", *args], env=env.environ(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def state(platform_env, monkeypatch: pytest.MonkeyPatch) -> ui_state.UiState:
    for k, v in ui_state.environment(platform_env.home).items():
        monkeypatch.setenv(k, v)
    return ui_state.build(platform_env.home)


def rows_of(page: str, table: str) -> list[str]:
    body = re.search(rf'<table class="{table}">(.*?)</table>', page, re.S)
    assert body, f"no table {table}"
    return re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)


def test_report_page(platform_env, state, tmp_path: Path) -> None:
    out = tmp_path / "page" / "report.html"
    done = report(platform_env, ui_state.SNAPSHOT, "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")

    # self-contained: every image inline, no script, no stylesheet or font fetched, links only to MLflow
    assert re.findall(r'src="([^"]*)"', page) and all(s.startswith("data:image/png;base64,")
                                                      for s in re.findall(r'src="([^"]*)"', page))
    assert "<script" not in page and "<link" not in page and "@import" not in page
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls and all(u.startswith(ui_state.MLFLOW_UI + "/") for u in urls), urls

    versions = rows_of(page, "versions")
    for pk, version in state.versions.items():
        assert any(pk in r and version in r and "latest" in r for r in versions), (pk, version)
    checks = rows_of(page, "checks")
    failing = [r for r in checks if ui_state.FAILING_DAY in r]
    header = re.findall(r"<th>(.*?)</th>", checks[0])
    column = header.index(ui_state.FAILED_CHECK)
    cells = re.findall(r"<td[^>]*>.*?</td>", failing[0])
    assert cells[column] == '<td class="failed">FAILED</td>'
    for pk in ui_state.DAYS:
        row = next(r for r in checks if pk in r)
        assert re.findall(r"<td[^>]*>.*?</td>", row)[column] == '<td class="passed">passed</td>'

    runs = rows_of(page, "runs")[1:]
    assert len(runs) == 1 and f'<a href="{state.run_url}">{state.run_id}</a>' in runs[0]
    for pk in ui_state.DAYS:
        assert f"{pk} {state.versions[pk]}" in runs[0]
    assert ui_state.FAILING_DAY not in runs[0]
    # the churn label's range on the failing day shows the bad value
    assert any(ui_state.FAILING_DAY in r and "churn_label" in r and "<td>7</td>" in r for r in rows_of(page, "columns"))

    shot = chromium_screenshot(out.as_uri(), SCREENSHOTS / "report.png")
    assert shot.stat().st_size > 10_000


def test_report_unverified_version_exits_1(platform_env, state, tmp_path: Path) -> None:
    from snapshot_platform.store import SnapshotStore

    store = SnapshotStore(str(platform_env.storage))
    m = store.latest(ui_state.SNAPSHOT, ui_state.DAYS[1])
    part = Path(str(store.part_path(m, m.files[0])).replace("file://", ""))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.chmod(0o644)
    part.write_bytes(bytes(data))
    out = tmp_path / "report.html"
    done = report(platform_env, ui_state.SNAPSHOT, "--out", str(out), "--no-runs")
    assert done.returncode == 1, done.stderr
    assert f"not verified: {ui_state.DAYS[1]}" in done.stderr
    assert f"Not verified: {ui_state.DAYS[1]}: version {m.version} did not verify" in out.read_text()


def test_report_unknown_snapshot_exits_2(platform_env, tmp_path: Path) -> None:
    done = report(platform_env, "no_such_snapshot", "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "unknown snapshot 'no_such_snapshot'" in done.stderr
    assert not (tmp_path / "r.html").exists()
