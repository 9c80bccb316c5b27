"""What the Dagster UI shows, in headless Chromium (Debian's ``chromium``; ``make test`` installs it).

``dagster-webserver`` serves a DAGSTER_HOME with four materialized partitions of ``customer_data``
(2024-01-04 failed its blocking check ``column_rules_churn_label``) and ``models/churn`` trained on
2024-01-01..03 with ``$SNAPSHOT_PLATFORM_MLFLOW_UI_URL`` set (ui_state.py). The UI is a JavaScript
app: the test waits (bounded) for the text over the DevTools protocol (browser.py), then asserts on
what the page shows: each partition's version on its partition page, the failed check on the failing
partition (its row of ``snapshot/partitions`` and the check's latest execution), the link to the
MLflow run. Screenshots: build/screenshots/dagster_*.png (README, "Screenshots").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from snapshot_platform_tests import ui_state
from snapshot_platform_tests.browser import SCREENSHOTS, Browser, chromium_binary
from snapshot_platform_tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def state(platform_env, monkeypatch: pytest.MonkeyPatch) -> ui_state.UiState:
    chromium_binary()  # skip (fail under CI) before the minute of set-up when there is no browser
    for k, v in ui_state.environment(platform_env.home).items():
        monkeypatch.setenv(k, v)
    return ui_state.build(platform_env.home)


@pytest.fixture
def webserver(platform_env, state, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                 "-w", str(REPO_ROOT / "workspace.yaml")],
                                cwd=REPO_ROOT, env=platform_env.environ(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not serve {url} (exit {proc.poll()}):\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def scroll_to(browser: Browser, text: str) -> None:
    """Scroll the first leaf element whose text is ``text`` to the top of its scrolling pane."""
    found = browser.evaluate(
        "(() => { const el = [...document.querySelectorAll('body *')].find(e => e.childElementCount === 0"
        f" && e.textContent.trim() === {json.dumps(text)}); if (!el) return false;"
        " el.scrollIntoView({block: 'start'}); return true; })()")
    assert found, f"no element shows {text!r}"


def skip_community_dialog(browser: Browser) -> None:
    """Close the webserver's one-time "Join the Dagster community" dialog (it covers the screenshots).

    Skip is clicked on every poll: the dialog can render after the first click (seen on a loaded
    machine), and the wait then timed out with the dialog still open."""
    browser.wait_for("(() => { [...document.querySelectorAll('button')]"
                     ".filter(b => b.innerText.trim() === 'Skip').forEach(b => b.click());"
                     " return !document.body.innerText.includes('Join the Dagster community'); })()",
                     30, "the dialog to close")


def text_of(browser: Browser) -> str:
    return browser.evaluate("document.body.innerText")


def test_dagster_ui_shows_versions_failed_check_and_mlflow_link(webserver: str, state: ui_state.UiState) -> None:
    asset = f"{webserver}/assets/snapshots/{ui_state.SNAPSHOT}"
    with Browser(1800, 1100) as browser:
        # each partition's page: its own version in the materialization's metadata
        for pk, version in state.versions.items():
            browser.goto(f"{asset}?view=partitions&partition={pk}")
            browser.wait_for_text(f"snapshots/customer_data/{pk}/{version}", 120)
            others = [v for p, v in state.versions.items() if p != pk]
            lines = text_of(browser).splitlines()
            at = lines.index("snapshot/version")
            assert version in lines[at:at + 4] and not set(others) & set(lines[at:at + 4])
        skip_community_dialog(browser)
        scroll_to(browser, "snapshot/version")
        browser.screenshot(SCREENSHOTS / "dagster_partition_version.png")

        # the failing partition's row of snapshot/partitions names the failed check; the others none
        browser.wait_for_text(ui_state.FAILED_CHECK)
        rows = {line.split("\t")[0]: line.split("\t") for line in text_of(browser).splitlines()
                if line.split("\t")[0] in state.versions}
        assert rows[ui_state.FAILING_DAY][1] == state.versions[ui_state.FAILING_DAY]
        assert rows[ui_state.FAILING_DAY][-1] == ui_state.FAILED_CHECK
        assert all(rows[pk][-1] == "-" for pk in ui_state.DAYS), rows
        scroll_to(browser, "snapshot/partitions")
        browser.screenshot(SCREENSHOTS / "dagster_partitions_failed_check.png")

        # the check's latest execution: failed, on the failing partition, at its version
        browser.goto(f"{asset}?view=checks&checkDetail={ui_state.FAILED_CHECK}")
        browser.wait_for_text("Latest execution", 120)
        browser.wait_for_text("rows_not_accepted")
        lines = [x.strip() for x in text_of(browser).splitlines() if x.strip()]
        # the check's entry in the list of checks shows its status under its name
        browser.wait_for(f"/\\n{ui_state.FAILED_CHECK}\\n(?:{ui_state.FAILED_CHECK}\\n)?Failed\\n/"
                         ".test(document.body.innerText)", what=f"{ui_state.FAILED_CHECK} listed as Failed")
        lines = [x.strip() for x in text_of(browser).splitlines() if x.strip()]
        detail = lines[lines.index("Latest execution"):]
        assert detail[detail.index("Evaluation result") + 1] == "Failed"
        assert detail[detail.index("Partition") + 1] == ui_state.FAILING_DAY
        assert detail[detail.index("snapshot/version") + 1] == state.versions[ui_state.FAILING_DAY]
        assert detail[detail.index("rows_not_accepted") + 1] == "1"
        skip_community_dialog(browser)
        browser.screenshot(SCREENSHOTS / "dagster_failed_check.png")

        # the model's partition: mlflow/run_id is a link to the run's page in the MLflow UI
        browser.goto(f"{webserver}/assets/models/churn?view=partitions&partition={ui_state.DAYS[-1]}")
        browser.wait_for_text("mlflow/run_id", 120)
        hrefs = browser.wait_for(
            "(() => { const h = [...document.querySelectorAll('a')].map(a => a.href)"
            f".filter(h => h.includes({json.dumps(state.run_id)})); return h.length ? h : null; }})()",
            what="a link to the MLflow run")
        assert state.run_url in hrefs and state.run_url.startswith(ui_state.MLFLOW_UI + "/#/experiments/")
        skip_community_dialog(browser)
        scroll_to(browser, "mlflow/run_id")
        browser.screenshot(SCREENSHOTS / "dagster_mlflow_link.png")
