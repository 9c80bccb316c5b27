"""The streaming keyed diff of two snapshot versions (``snapshot_platform.store.diff``) and ``diff`` CLI.

Versions are published here with tiny row groups and parts, and diffed in tiny batches, so that the
merge-join crosses many batch, row-group and part boundaries on both sides; every count is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from snapshot_platform.cli import main
from snapshot_platform.store import Manifest, SnapshotStore, WriterSettings
from snapshot_platform.store.diff import diff_versions, schema_changes

SMALL = WriterSettings(row_group_rows=64, part_rows=256)  # 1,000 rows: 4 parts of 4 row groups


def fields(key: list[str]) -> dict[str, Any]:
    return {"window": {"start": "s", "end": "e"}, "query": "q", "query_sha256": "0" * 64, "params": {},
            "key": key, "source": {"kind": "test"}, "source_state": {}, "dagster_run_id": None,
            "code_version": "t", "library_versions": {}}


def publish(store: SnapshotStore, table: pa.Table, key: list[str], asset: str = "t", partition: str = "p") -> Manifest:
    return store.publish(asset, partition, table.schema, table.to_batches(max_chunksize=97), fields(key)).manifest


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage", settings=SMALL)


def base(n: int = 1000) -> dict[str, list[Any]]:
    ids = list(range(0, 2 * n, 2))  # even ids, so that inserts can land between them
    return {"id": ids, "amount": [float(i) for i in ids], "label": [i % 3 for i in ids],
            "country": [("DE", "FI", None)[i % 3] for i in ids]}


def test_merge_join_over_many_batches_counts_exactly(store: SnapshotStore) -> None:
    a_cols = base()
    a = publish(store, pa.table(a_cols), ["id"])
    assert len(a.files) == 4
    b_cols = {k: list(v) for k, v in a_cols.items()}
    changed_amount = {10, 500, 998, 1998}  # first part, middle, a part boundary (row 499), last row
    changed_label = {500, 1200}
    removed = {0, 64 * 2, 1000}  # the first row, a row-group boundary, the middle
    added = [1, 129, 1001, 2001, 2003]  # between existing keys and after the end
    rows = []
    for i, key in enumerate(b_cols["id"]):
        if key in removed:
            continue
        rows.append({"id": key,
                     "amount": b_cols["amount"][i] + (0.5 if key in changed_amount else 0),
                     "label": b_cols["label"][i] + (1 if key in changed_label else 0),
                     "country": b_cols["country"][i]})
    rows += [{"id": k, "amount": 1.0, "label": 0, "country": "SE"} for k in added]
    rows.sort(key=lambda r: r["id"])
    b = publish(store, pa.Table.from_pylist(rows, schema=pa.table(a_cols).schema), ["id"])

    d = diff_versions(store, a, b, batch_rows=50)
    assert d.method == "merge-join on the key"
    assert (d.rows_a, d.rows_b) == (1000, 1002)
    assert (d.rows_added, d.rows_removed, d.rows_changed) == (5, 3, 5)
    assert d.rows_unchanged == 1000 - 3 - 5
    assert d.changed_by_column == {"amount": 4, "label": 2}
    assert d.schema_changes == ()
    assert [s["id"] for s in d.samples.added] == added
    assert [s["id"] for s in d.samples.removed] == sorted(removed)
    assert [s["id"] for s in d.samples.changed] == sorted(changed_amount | changed_label)[:5]
    # the same answer in one big batch, and in batches of a few rows
    for batch_rows in (7, 10_000):
        again = diff_versions(store, a, b, batch_rows=batch_rows)
        assert {k: getattr(again, k) for k in ("rows_added", "rows_removed", "rows_changed", "changed_by_column")} == \
               {k: getattr(d, k) for k in ("rows_added", "rows_removed", "rows_changed", "changed_by_column")}
    # summary statistics, streamed
    amount = d.columns["amount"]
    assert amount.a["rows"] == 1000 and amount.a["nulls"] == 0
    assert amount.a["mean"] == pytest.approx(np.mean(a_cols["amount"]))
    assert amount.a["std"] == pytest.approx(np.std(a_cols["amount"]))
    assert amount.b["mean"] == pytest.approx(np.mean([r["amount"] for r in rows]))
    assert amount.shift["mean"] == pytest.approx(amount.b["mean"] - amount.a["mean"])
    assert (amount.a["min"], amount.a["max"]) == (0.0, 1998.0)
    country = d.columns["country"]
    assert country.a["nulls"] == sum(v is None for v in a_cols["country"])
    assert (country.a["min"], country.a["max"]) == ("DE", "FI")
    assert country.b["max"] == "SE"


def test_schema_changes_and_retyped_columns(store: SnapshotStore) -> None:
    a = publish(store, pa.table({"id": [1, 2, 3], "x": pa.array([1, 2, 3], pa.int64()), "gone": ["a", "b", "c"]}),
                ["id"])
    b = publish(store, pa.table({"id": [1, 2, 3], "x": pa.array([1.0, 2.0, 3.5], pa.float64()),
                                 "new": [True, False, True]}), ["id"])
    d = diff_versions(store, a, b)
    assert d.as_dict()["schema_changes"] == [
        {"column": "x", "change": "type_changed", "type_a": "int64", "type_b": "double"},
        {"column": "gone", "change": "removed", "type_a": "string", "type_b": None},
        {"column": "new", "change": "added", "type_a": None, "type_b": "bool"},
    ]
    # a retyped column compares by value: 1 == 1.0, only 3 -> 3.5 changed
    assert (d.rows_changed, d.changed_by_column) == (1, {"x": 1})
    assert d.columns["new"].a is None and d.columns["new"].b["mean"] == pytest.approx(2 / 3)
    assert schema_changes(a, None) == []


def test_composite_keys_and_keys_out_of_our_order_fall_back_to_a_hash_join(store: SnapshotStore) -> None:
    # composite key, sorted: merge-join
    a = publish(store, pa.table({"k1": [1, 1, 2, 2], "k2": ["a", "b", "a", "b"], "v": [1, 2, 3, 4]}), ["k1", "k2"])
    b = publish(store, pa.table({"k1": [1, 2, 2, 3], "k2": ["b", "a", "b", "a"], "v": [2, 30, 4, 5]}), ["k1", "k2"])
    d = diff_versions(store, a, b, batch_rows=1)
    assert d.method == "merge-join on the key"
    assert (d.rows_added, d.rows_removed, d.rows_changed) == (1, 1, 1)
    assert d.as_dict()["samples"]["changed"] == [{"k1": 2, "k2": "a"}]

    # a collation that is not ours ("a-b" before "ab" before "B"), and a NULL key: hash join, same counts
    keys = ["a-b", "ab", "B", "b"] + [f"z{i:03d}" for i in range(300)]
    a = publish(store, pa.table({"k": keys, "v": list(range(304))}), ["k"], partition="q")
    kb = keys[1:] + [None]
    vb = list(range(1, 304)) + [0]
    vb[10] = -1
    b = publish(store, pa.table({"k": kb, "v": vb}), ["k"], partition="q")
    d = diff_versions(store, a, b, batch_rows=16)
    assert d.method.startswith("hash-partitioned join")
    assert (d.rows_added, d.rows_removed, d.rows_changed, d.rows_unchanged) == (1, 1, 1, 302)
    samples = d.as_dict()["samples"]
    assert samples["removed"] == [{"k": "a-b"}] and samples["added"] == [{"k": None}]


def test_a_partition_present_on_one_side_only(store: SnapshotStore) -> None:
    b = publish(store, pa.table(base(300)), ["id"])
    d = diff_versions(store, None, b, batch_rows=7)
    assert (d.version_a, d.rows_added, d.rows_removed, d.rows_changed) == (None, 300, 0, 0)
    d = diff_versions(store, b, None, batch_rows=7)
    assert (d.rows_added, d.rows_removed) == (0, 300)
    d = diff_versions(store, b, b)
    assert d.same_version and d.rows_changed == 0 and d.rows_unchanged == 300


def test_diff_cli(store: SnapshotStore, tmp_path: Path) -> None:
    cols = base(700)
    a = publish(store, pa.table(cols), ["id"], asset="customers", partition="2024-01-01")
    cols2 = {k: list(v) for k, v in cols.items()}
    for i in (3, 333, 699):
        cols2["amount"][i] += 1
    b = publish(store, pa.table(cols2), ["id"], asset="customers", partition="2024-01-01")
    runner = CliRunner()
    args = ["--storage", str(tmp_path / "storage"), "diff", "customers", "2024-01-01", "--from", a.version]
    res = runner.invoke(main, [*args, "--to", b.version, "--json", "--batch-rows", "13"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["version_a"], out["version_b"]) == (a.version, b.version)
    assert (out["rows_added"], out["rows_removed"], out["rows_changed"], out["schema_changes"]) == (0, 0, 3, [])
    # --to defaults to the latest version; text output names the counts
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "added 0, removed 0, changed 3" in res.stdout and "amount 3" in res.stdout
    res = runner.invoke(main, [*args[:-1], "0123456789abcdef0123", "--json"])
    assert res.exit_code == 1 and "no published version" in json.loads(res.stdout)["error"]
    # a flipped byte is caught while streaming
    part = Path(str(store.part_path(b, b.files[-1])))
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    part.write_bytes(bytes(raw))
    res = runner.invoke(main, [*args, "--to", b.version])
    assert res.exit_code == 1 and "corrupt" in res.stderr
    res = runner.invoke(main, ["diff", "--help"])
    assert res.exit_code == 0 and "--json" in res.stdout


def test_nothing_is_read_from_a_version_that_does_not_prove_itself(store: SnapshotStore, tmp_path: Path) -> None:
    """The diff takes a version's schema from its hash-verified footers, not from an unchecked file:
    a first part whose footer was overwritten is reported as corruption (exit 1), not a traceback."""
    from snapshot_platform.store import IntegrityError

    a = publish(store, pa.table(base(300)), ["id"], asset="customers", partition="2024-01-01")
    cols = base(300)
    cols["amount"][7] += 1
    b = publish(store, pa.table(cols), ["id"], asset="customers", partition="2024-01-01")
    first = Path(str(store.part_path(b, b.files[0])))
    raw = bytearray(first.read_bytes())
    raw[-8:] = b"\x00" * 8  # the footer's length and magic: not a Parquet file any more
    first.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=f"{b.files[0].path}: sha256 .* does not match"):
        diff_versions(store, a, b)
    res = CliRunner().invoke(main, ["--storage", str(tmp_path / "storage"), "diff", "customers", "2024-01-01",
                                    "--from", a.version, "--to", b.version, "--json"])
    assert res.exit_code == 1, res.output
    assert "corrupt snapshot" in json.loads(res.stdout)["error"] and "sha256" in res.stdout
