"""The report's parts that need no server (snapshot_platform/html_report.py); the page end to end is
integration/test_html_report.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pytest

from snapshot_platform.html_report import MLFLOW_UI_ENV, ColumnSummary, mlflow_ui


def test_column_summary_accumulates_nulls_and_ranges_over_batches() -> None:
    s = ColumnSummary("amount", "int64")
    s.add(pa.array([5, None, 3]))
    s.add(pa.array([None, None]))  # all null: no range from it
    s.add(pa.array([9, -2]))
    assert (s.rows, s.nulls, s.min, s.max) == (7, 3, -2, 9)
    assert s.null_fraction == pytest.approx(3 / 7)
    t = ColumnSummary("day", "date32")
    t.add(pa.array([dt.date(2024, 1, 3), dt.date(2024, 1, 1)]))
    assert (t.min, t.max) == (dt.date(2024, 1, 1), dt.date(2024, 1, 3))
    b = ColumnSummary("flag", "bool")  # unordered: nulls only
    b.add(pa.array([True, None]))
    assert (b.nulls, b.min, b.max) == (1, None, None)
    assert ColumnSummary("empty", "int64").null_fraction == 0.0


def test_mlflow_ui_links_as_the_dagster_metadata_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from snapshot_platform.orchestration import metadata

    assert MLFLOW_UI_ENV == metadata.MLFLOW_UI_ENV
    for env in (None, "http://mlflow.example:5000/"):
        if env:
            monkeypatch.setenv(MLFLOW_UI_ENV, env)
        else:
            monkeypatch.delenv(MLFLOW_UI_ENV, raising=False)
        for uri in ("sqlite:///tmp/mlflow.db", "https://tracking.example/"):
            assert mlflow_ui(uri) == metadata.mlflow_ui(uri)


def test_report_module_imports_no_dagster() -> None:
    code = "import sys, snapshot_platform.html_report; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
