"""The drift check (checks.drift) and `snapshot-platform drift`, on a SQLite source (no servers).

Partitions 2024-01-01..04 draw every column from the same distributions; 2024-01-05 shifts
``amount`` (numeric) and ``country`` (categorical) on purpose and leaves ``items`` and ``channel``
alone. The figures are checked against a PSI computed here independently, from the source rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import FloatMetadataValue

from snapshot_platform.catalog import CatalogError, load_catalog, parse_catalog
from snapshot_platform.cli import main
from snapshot_platform.orchestration.snapshot_assets import check_results
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.capture_runs import take_snapshot

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
SHIFTED = "2024-01-05"
COLUMNS = ["amount", "items", "country", "channel"]
THRESHOLD = 0.2


def _rows(day: str, seed: int, shifted: bool) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    n = 1500
    amount = rng.normal(300 if shifted else 100, 20, n)
    items = rng.poisson(4, n)
    countries = rng.choice(["de", "fr", "it", "es"], n, p=[0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1])
    channel = rng.choice(["web", "app", None], n, p=[0.6, 0.35, 0.05])
    base = int(day.replace("-", "")) * 10_000
    return [(base + i, f"{day} 12:00:00", float(amount[i]), int(items[i]), str(countries[i]), channel[i])
            for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("drift")
    db = tmp / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sales (id INTEGER, day TEXT, amount REAL, items INTEGER, country TEXT, channel TEXT)")
        for i, day in enumerate(DAYS):
            conn.executemany("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?)", _rows(day, i, day == SHIFTED))
    doc = {
        "sources": {"shop": {"kind": "sqlite", "path": str(db)}},
        "snapshots": {"sales": {
            "source": "shop",
            "query": "SELECT id, amount, items, country, channel FROM sales "
                     "WHERE day >= datetime(:partition_start) AND day < datetime(:partition_end)",
            "partitions": {"cadence": "daily", "start": "2024-01-01"},
            "key": ["id"],
            "checks": {"drift": {"columns": COLUMNS, "trailing": 3, "threshold": THRESHOLD}},
        }},
    }
    catalog_file = tmp / "snapshots.yaml"
    import yaml

    catalog_file.write_text(yaml.safe_dump(doc))
    catalog = load_catalog(catalog_file)
    store = SnapshotStore(tmp / "storage")
    outcomes = {day: take_snapshot(catalog, "sales", day, store) for day in DAYS}
    with sqlite3.connect(db) as conn:
        frame = pd.read_sql("SELECT * FROM sales", conn)
    frame["partition"] = frame["day"].str[:10]
    return {"store": store, "outcomes": outcomes, "frame": frame, "catalog": catalog_file, "tmp": tmp}


def reference_psi(ref: pd.Series, new: pd.Series, numeric: bool) -> float:
    """PSI computed independently: decile edges with numpy, bins with np.digitize, shares with pandas."""
    eps = 1e-4
    if numeric:
        vals = ref.dropna().to_numpy(float)
        edges = np.unique(np.quantile(vals, np.arange(1, 10) / 10))
        nbins = len(edges) + 1
        e = np.bincount(np.digitize(vals, edges, right=True), minlength=nbins).astype(float)
        a = np.bincount(np.digitize(new.dropna().to_numpy(float), edges, right=True), minlength=nbins).astype(float)
        e, a = list(e), list(a)
    else:
        cats = sorted(set(ref.dropna()) | set(new.dropna()))
        e = [float((ref == c).sum()) for c in cats]
        a = [float((new == c).sum()) for c in cats]
    if ref.isna().any() or new.isna().any():
        e.append(float(ref.isna().sum()))
        a.append(float(new.isna().sum()))
    e = [max(x / len(ref), eps) for x in e]
    a = [max(x / len(new), eps) for x in a]
    return sum((y - x) * math.log(y / x) for x, y in zip(e, a))


def _drift(world: dict[str, Any], day: str) -> Any:
    return world["outcomes"][day].checks["drift"]


def test_a_shifted_partition_is_flagged_on_exactly_the_shifted_columns(world: dict[str, Any]) -> None:
    shifted = _drift(world, SHIFTED)
    assert shifted.passed is False and shifted.blocking is False and shifted.severity == "WARN"
    assert set(shifted.details["crossed"]) == {"amount", "country"}
    assert shifted.details["compared_with"] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert {c: e["crossed"] for c, e in shifted.details["columns"].items()} == {
        "amount": True, "items": False, "country": True, "channel": False}
    calm = _drift(world, "2024-01-04")
    assert calm.passed is True and calm.details["crossed"] == []
    assert calm.details["compared_with"] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    # the first partition has nothing to compare with: passes, says so
    first = _drift(world, "2024-01-01")
    assert first.passed is True and first.details["compared_with"] == []
    # the manifest in storage carries the same per-column figures
    stored = world["store"].latest("sales", SHIFTED).checks["drift"]
    assert stored.details["columns"]["amount"]["figure"] == shifted.details["columns"]["amount"]["figure"]


@pytest.mark.parametrize("day", ["2024-01-04", SHIFTED])
def test_the_figures_match_an_independent_computation(world: dict[str, Any], day: str) -> None:
    frame = world["frame"]
    i = DAYS.index(day)
    ref = frame[frame["partition"].isin(DAYS[i - 3:i])]
    new = frame[frame["partition"] == day]
    cols = _drift(world, day).details["columns"]
    for c in COLUMNS:
        expected = reference_psi(ref[c], new[c], numeric=c in ("amount", "items"))
        assert cols[c]["figure"] == pytest.approx(expected, rel=1e-9, abs=1e-12), c
        assert cols[c]["crossed"] is bool(expected > THRESHOLD)


def test_the_check_result_carries_the_figures_as_floats_for_the_ui(world: dict[str, Any]) -> None:
    results = {r.check_name: r for r in check_results("sales", world["outcomes"][SHIFTED])}
    meta = results["drift"].metadata
    for c in COLUMNS:
        assert isinstance(meta[f"drift/{c}"], FloatMetadataValue)
        assert meta[f"drift/{c}"].value == _drift(world, SHIFTED).details["columns"][c]["figure"]
    assert results["drift"].passed is False


def test_the_drift_command_reports_and_exits_0(world: dict[str, Any]) -> None:
    args = ["--storage", str(world["store"].root), "--catalog", str(world["catalog"])]
    res = CliRunner().invoke(main, [*args, "drift", "sales", SHIFTED, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    recorded = _drift(world, SHIFTED).details["columns"]
    assert {c: e["figure"] for c, e in report["columns"].items()} == {c: e["figure"] for c, e in recorded.items()}
    # --against one chosen partition
    res = CliRunner().invoke(main, [*args, "drift", "sales", SHIFTED, "--against", "2024-01-01", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    frame = world["frame"]
    ref, new = frame[frame["partition"] == "2024-01-01"], frame[frame["partition"] == SHIFTED]
    assert report["against"][0]["partition"] == "2024-01-01"
    assert report["columns"]["amount"]["figure"] == pytest.approx(reference_psi(ref["amount"], new["amount"], True))
    text = CliRunner().invoke(main, [*args, "drift", "sales", SHIFTED])
    assert text.exit_code == 0 and "amount" in text.output and "CROSSED" in text.output
    missing = CliRunner().invoke(main, [*args, "drift", "sales", "2023-12-01"])
    assert missing.exit_code == 1 and "2023-12-01" in missing.output  # no such version: the data says no
    first = CliRunner().invoke(main, [*args, "drift", "sales", "2024-01-01", "--json"])
    assert first.exit_code == 0 and json.loads(first.stdout)["against"] == []  # nothing earlier: reported


def test_a_bad_drift_config_names_file_entry_and_field() -> None:
    base = {"sources": {"s": {"kind": "sqlite", "path": "x.sqlite"}},
            "snapshots": {"t": {"source": "s", "query": "SELECT :partition_start, :partition_end",
                                "partitions": {"cadence": "daily", "start": "2024-01-01"}, "key": ["a"]}}}
    for drift, field in (({"columns": ["a"], "bins": 5}, "checks.drift.bins"),
                         ({"columns": []}, "checks.drift.columns"),
                         ({"columns": ["a"], "threshold": 0}, "checks.drift.threshold")):
        base["snapshots"]["t"]["checks"] = {"drift": drift}
        with pytest.raises(CatalogError, match=rf"cat\.yaml: snapshots\.t: field '{field}'"):
            parse_catalog(base, "cat.yaml")
