"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for the UI tests.

A small client on ``websockets`` (already installed with the webserver): navigate, wait (bounded)
until a JavaScript condition holds, evaluate, screenshot. Screenshots go to ``build/screenshots/``
(README, "Screenshots"). A missing chromium skips locally and fails under CI=true (``missing_peer``).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from snapshot_platform_tests.conftest import REPO_ROOT, missing_peer

SCREENSHOTS = REPO_ROOT / "build" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        missing_peer("chromium is not installed (make test installs Debian's chromium package)")
    return str(found)


class Browser:
    """One headless Chromium with a fresh profile and one page; stopped (and its profile removed) on exit."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.ws: Any = None
        self.ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=20)
            shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events in between are dropped)."""
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 90, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy (bounded): its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
                raise AssertionError(f"timed out after {timeout} s waiting for {what or expression}; "
                                     f"the page shows:\n{text}")
            time.sleep(0.25)

    def wait_for_text(self, text: str, timeout: float = 90) -> None:
        self.wait_for(f"document.body && document.body.innerText.includes({json.dumps(text)})", timeout,
                      f"the text {text!r}")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def chromium_screenshot(url: str, path: Path) -> Path:
    """A full-page screenshot of a static page (waits for its load)."""
    with Browser() as browser:
        browser.goto(url)
        browser.wait_for("document.readyState === 'complete'", 60, "the page to load")
        return browser.screenshot(path, full_page=True)
