"""Progress on stderr (issue 14 §1): drawn on a terminal, never when stderr is a pipe or under --json.

The terminal is a real pseudo-terminal (``pty``): the command's stderr is its slave end, and what
the command drew is read back from the master end. No timing is asserted, only what was drawn.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from snapshot_platform.demo import source_db
from snapshot_platform_tests.integration.test_cli import COMMAND, clean_environ

NAME = "customer_data"
DAY = "2024-01-02"
QUERY = ("SELECT customer_id, signup_date, country, churn_label FROM customers\n"
         "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)\n")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "production.sqlite"
    source_db.create(db)
    catalog = tmp_path / "snapshots.yaml"
    catalog.write_text(yaml.safe_dump({
        "sources": {"demo_db": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {NAME: {"source": "demo_db", "query": QUERY, "key": ["customer_id"],
                             "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"}}},
    }))
    return clean_environ(SNAPSHOT_PLATFORM_HOME=str(tmp_path / "home"),
                         SNAPSHOT_PLATFORM_STORAGE_URL=str(tmp_path / "storage"),
                         SNAPSHOT_PLATFORM_CATALOG=str(catalog), COLUMNS="160", TERM="xterm")


def run_with_tty_stderr(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal; (exit status, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the slave end closed it
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.run([*COMMAND, *args], env=env, stdout=subprocess.PIPE, stderr=slave,
                              stdin=subprocess.DEVNULL, text=True, timeout=180)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, proc.stdout, b"".join(drawn).decode(errors="replace")


def test_snapshot_draws_rows_on_a_terminal_and_erases_it(env):
    code, out, terminal = run_with_tty_stderr(["snapshot", NAME, DAY], env)
    assert code == 0, terminal
    rows = int(re.search(r"\((\d+) rows", out).group(1))
    assert rows > 0
    text = _ANSI.sub("", terminal)
    # the final update: every row read, a rate, the bytes and the elapsed time, with the partition
    assert re.search(rf"{NAME}/{DAY}\s+{rows:,} rows\s+[\d,]+ rows/s\s+[\d.,]+ k?B", text), text
    assert "published" not in text  # the result goes to stdout, the terminal only had progress


def test_verify_draws_a_bar_with_the_manifests_totals(env):
    subprocess.run([*COMMAND, "snapshot", NAME, DAY], env=env, check=True, capture_output=True)
    code, out, terminal = run_with_tty_stderr(["verify"], env)
    assert code == 0, terminal
    assert "1 version checked" in out
    text = _ANSI.sub("", terminal)
    assert re.search(r"verify\s.*1/1", text), terminal
    # every part's bytes told as it was hashed: the last render shows all of the manifest's bytes
    assert re.search(r"verify\s.*\b([\d.]+)/\1 [kMG]?B", text), text


def test_diff_draws_a_bar_over_both_versions_rows(env, tmp_path):
    def snap() -> tuple[str, int]:
        proc = subprocess.run([*COMMAND, "snapshot", NAME, DAY], env=env, capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr
        found = re.search(r"version ([0-9a-f]{20}) \((\d+) rows", proc.stdout)
        return found.group(1), int(found.group(2))

    (v1, rows1) = snap()
    source_db.evolve(tmp_path / "production.sqlite")  # churn labels change for this day's signups
    (v2, rows2) = snap()
    assert v1 != v2
    code, out, terminal = run_with_tty_stderr(["diff", NAME, DAY, "--from", v1, "--to", v2], env)
    assert code == 0, terminal
    total = rows1 + rows2
    assert re.search(rf"diff {NAME}/{DAY}\s.*{total}/{total} rows", _ANSI.sub("", terminal)), terminal
    code, _, terminal = run_with_tty_stderr(["diff", NAME, DAY, "--from", v1, "--json"], env)
    assert code == 0 and terminal == ""


def test_json_on_a_terminal_and_a_pipe_draw_nothing(env):
    code, _, terminal = run_with_tty_stderr(["snapshot", NAME, DAY, "--json"], env)
    assert code == 0 and terminal == ""
    code, _, terminal = run_with_tty_stderr(["verify", "--json"], env)
    assert code == 0 and terminal == ""
    for args in (["snapshot", NAME, "2024-01-03"], ["verify"]):  # stderr a pipe: errors only
        proc = subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
