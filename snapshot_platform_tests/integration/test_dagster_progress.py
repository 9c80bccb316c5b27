"""The snapshot step logs its progress to the run's event log (issue 14 §1), every
``SNAPSHOT_PLATFORM_PROGRESS_SECONDS`` (0 here: every batch, so no test waits for a clock)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from snapshot_platform.catalog import load_catalog
from snapshot_platform.demo import source_db
from snapshot_platform.orchestration.definitions import build_assets, build_resources
from snapshot_platform.orchestration.snapshot_assets import PROGRESS_INTERVAL_ENV

QUERY = ("SELECT customer_id, signup_date, country FROM customers\n"
         "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)\n")


def progress_messages(interval: str, platform_env: Any, write_catalog: Callable[..., Path],
                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[list[str], int]:
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, interval)
    db = tmp_path / "production.sqlite"
    source_db.create(db)
    catalog = load_catalog(write_catalog({
        "sources": {"demo_db": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {"customers": {"source": "demo_db", "query": QUERY, "key": ["customer_id"],
                                    "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    }))
    with DagsterInstance.get() as instance:
        result = materialize(build_assets(catalog), selection=[AssetKey(["snapshots", "customers"])],
                             partition_key="2024-01-02", resources=build_resources(str(platform_env.storage)),
                             instance=instance)
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    rows = next(e for e in result.get_asset_materialization_events()).step_materialization_data \
        .materialization.metadata["dagster/row_count"].value
    return [m for m in messages if "rows read" in m], rows


def test_the_step_logs_rows_rate_bytes_and_elapsed(platform_env, write_catalog, monkeypatch, tmp_path):
    found, rows = progress_messages("0", platform_env, write_catalog, monkeypatch, tmp_path)
    assert found, "no progress message in the run's event log"
    last = found[-1]
    assert re.fullmatch(rf"customers/2024-01-02: {rows:,} rows read \([\d,]+ rows/s, [\d.,]+ MB in memory\), "
                        r"\d+s elapsed", last), last


def test_a_step_shorter_than_the_interval_logs_no_progress(platform_env, write_catalog, monkeypatch, tmp_path):
    found, _ = progress_messages("3600", platform_env, write_catalog, monkeypatch, tmp_path)
    assert found == []
