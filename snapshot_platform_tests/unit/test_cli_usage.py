"""Every CLI mistake gets a clear answer and the documented exit code (issue 14 §5): 0 ok; 1 the data
says no (an integrity or check failure, no published version of a known snapshot's valid partition);
2 usage (an unknown snapshot, listing the known ones; a malformed or out-of-range partition key,
naming the expected form). Also ``--version`` and the wording of verify, show and gc.

No servers: the source is a generated SQLite file, the storage a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from snapshot_platform.cli import main
from snapshot_platform_tests.capture_runs import DEMO_QUERY, demo_catalog

NAME = "customer_data"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("cli_usage")
    catalog = demo_catalog(base, {
        NAME: {"source": "demo_db", "query": DEMO_QUERY, "key": ["customer_id"],
               "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"}},
        "orders": {"source": "demo_db", "query": DEMO_QUERY, "key": ["customer_id"],
                   "partitions": {"cadence": "daily", "start": "2024-01-01"}},
    })
    args = ["--storage", str(base / "storage"), "--catalog", str(catalog)]
    res = CliRunner().invoke(main, [*args, "snapshot", NAME, "2024-01-01"])
    assert res.exit_code == 0, res.output
    return {"args": args, "base": base}


def run(world: dict, *args: str):
    return CliRunner().invoke(main, [*world["args"], *args])


UNKNOWN = "unknown snapshot 'nope'"
DAY_FORM = "YYYY-MM-DD"
NO_VERSION = "no published version"


@pytest.mark.parametrize("args, code, says", [
    # 2: an unknown snapshot, in every subcommand that takes a name; the known ones are listed
    (("list", "nope"), 2, [UNKNOWN, "customer_data, orders"]),
    (("show", "nope", "2024-01-01"), 2, [UNKNOWN, "customer_data, orders"]),
    (("verify", "nope"), 2, [UNKNOWN, "customer_data, orders"]),
    (("diff", "nope", "2024-01-01", "--from", "0" * 20), 2, [UNKNOWN]),
    (("snapshot", "nope", "2024-01-01"), 2, [UNKNOWN, "customer_data, orders"]),
    # 2: a malformed or out-of-range partition key names the expected form
    (("show", NAME, "2024-02-30"), 2, [DAY_FORM]),
    (("show", NAME, "20240102"), 2, [DAY_FORM]),
    (("show", NAME, "2023-12-31"), 2, ["before the catalog's start"]),
    (("diff", NAME, "20240102", "--from", "0" * 20), 2, [DAY_FORM]),
    (("snapshot", NAME, "2024-02-30"), 2, [DAY_FORM]),
    # 1: a known snapshot and a valid partition, but no such version: the same code in show and diff
    (("show", NAME, "2024-01-05"), 1, [NO_VERSION]),
    (("show", NAME, "2024-01-01", "--version", "0" * 20), 1, [NO_VERSION]),
    (("diff", NAME, "2024-01-01", "--from", "0" * 20), 1, [NO_VERSION]),
    (("verify", "orders"), 1, ["no published versions of orders"]),
    # 0
    (("list", NAME), 0, ["2024-01-01"]),
    (("list", "orders"), 0, ["no published versions of orders"]),
    (("show", NAME, "2024-01-01"), 0, ["2024-01-01"]),
])
def test_every_mistake_has_its_exit_code_and_a_clear_answer(world, args, code, says):
    res = run(world, *args)
    assert res.exit_code == code, (args, res.exit_code, res.output)
    assert "Traceback" not in res.output
    for text in says:
        assert text in res.output, (args, res.output)


def test_version_option():
    from importlib.metadata import version

    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"snapshot-platform, version {version('snapshot_platform')}"


def test_wording(world):
    verified = run(world, "verify", NAME)
    assert verified.exit_code == 0, verified.output
    assert "1 version checked, 0 failed" in verified.stdout
    shown = run(world, "show", NAME, "2024-01-01")
    assert "None" not in shown.stdout.split("source", 1)[1].splitlines()[0]  # sqlite: no host, no database
    assert "source      demo_db (sqlite" in shown.stdout
    collected = run(world, "gc", "--older-than", "1d", "--dry-run")
    assert collected.exit_code == 0, collected.output
    assert "0 leftovers; would remove 0 leftovers (0 bytes) idle for more than 1d" in collected.stdout
    assert "0:00:00" not in collected.stdout
