"""The integrity checks' logic (checks.py) on Arrow batches built in memory: no database, no store.

The same checks end to end, built in PostgreSQL and read back from the manifest and Dagster:
integration/test_checks_end_to_end.py.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from dagster import AssetKey

from snapshot_platform.catalog import CatalogError, parse_catalog
from snapshot_platform.checks import History, check_defs, run_checks
from snapshot_platform.orchestration.definitions import build_definitions
from snapshot_platform.store import schema_to_json
from snapshot_platform.store.manifest import SchemaColumn


def test_freshness_policy_follows_cadence(platform_env):
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    policy = graph.get(AssetKey(["snapshots", "customer_data"])).freshness_policy
    assert policy is not None
    assert policy.fail_window.to_timedelta() == dt.timedelta(days=2)
    assert policy.warn_window.to_timedelta() == dt.timedelta(hours=30)


# ------------------------------------------------------------------ streaming logic, no database


def _spec(**checks):
    cat = parse_catalog({
        "sources": {"s": {"kind": "sqlite", "path": "x.sqlite"}},
        "snapshots": {"t": {"source": "s", "query": "SELECT :partition_start, :partition_end",
                            "partitions": {"cadence": "daily", "start": "2024-01-01"},
                            "key": ["a", "b"], "not_null": ["a"], "checks": checks}},
    })
    return cat.snapshots["t"]


def test_duplicates_found_across_batch_boundaries_and_with_composite_keys():
    spec = _spec()
    b1 = pa.record_batch({"a": [1, 1, 2], "b": ["x", "y", "y"]})
    b2 = pa.record_batch({"a": [2, 3], "b": ["y", "z"]})  # (2, y) continues across the boundary
    b3 = pa.record_batch({"a": [3, None, None], "b": ["z", "q", "q"]})  # NULL keys are not equal
    out = run_checks(spec, schema_to_json(b1.schema), [b1, b2, b3], History())
    assert out["key_unique"].passed is False
    assert out["key_unique"].details["duplicate_rows"] == 2
    assert out["key_unique"].details["examples"] == [[2, "y"], [3, "z"]]
    assert out["not_null"].details["null_rows"] == {"a": 2}


def test_rules_on_a_missing_or_non_numeric_column_fail_with_a_reason():
    spec = _spec(columns={"b": {"min": 0}, "zz": {"accepted_values": [1]}})
    b = pa.record_batch({"a": [1], "b": ["x"]})
    out = run_checks(spec, schema_to_json(b.schema), [b], History())
    assert out["column_rules_b"].passed is False
    assert "numeric" in out["column_rules_b"].details["problem"]
    assert out["column_rules_zz"].details["problem"] == "column not in the snapshot"


def test_check_definitions_follow_the_catalog():
    names = {d.name: d.blocking for d in check_defs(_spec(schema_change="block", volume={"blocking": True},
                                                          columns={"b": {"max_null_fraction": 0.1}}))}
    assert names == {"key_unique": True, "not_null": True, "min_rows": True, "schema_unchanged": True,
                     "volume": True, "column_rules_b": False}


def test_bad_check_config_is_a_catalog_error():
    with pytest.raises(CatalogError, match=r"snapshots\.t: field 'checks\.columns\.b'"):
        _spec(columns={"b": {}})
    with pytest.raises(CatalogError, match=r"field 'checks\.schema_change'"):
        _spec(schema_change="sometimes")


# ------------------------------------------------------------------ each check on its own


def _orders(key=("id",), not_null=("id", "amount"), **checks):
    cat = parse_catalog({
        "sources": {"s": {"kind": "sqlite", "path": "x.sqlite"}},
        "snapshots": {"orders": {"source": "s", "query": "SELECT :partition_start, :partition_end",
                                 "partitions": {"cadence": "daily", "start": "2024-01-01"},
                                 "key": list(key), "not_null": list(not_null), "checks": checks}},
    })
    return cat.snapshots["orders"]


def _batch(ids, amounts=None, status=None):
    cols = {"id": pa.array(ids, pa.int64()),
            "amount": pa.array(amounts if amounts is not None else [1.0] * len(ids), pa.float64())}
    if status is not None:
        cols["status"] = pa.array(status, pa.string())
    return pa.record_batch(cols)


def _check(spec, batches, history=None, schema=None):
    schema = schema if schema is not None else schema_to_json(batches[0].schema)
    return run_checks(spec, schema, batches, history or History())


def test_a_sorted_unique_key_passes_over_many_batches():
    out = _check(_orders(), [_batch([1, 2]), _batch([3]), _batch([4, 5])])
    assert out["key_unique"].passed is True
    assert out["key_unique"].details["duplicate_rows"] == 0
    assert out["key_unique"].details["examples"] == []


def test_a_duplicate_split_by_a_batch_boundary_is_caught_even_across_an_empty_batch():
    spec = _orders()
    out = _check(spec, [_batch([1, 2]), _batch([2, 3])])
    assert out["key_unique"].passed is False
    assert out["key_unique"].details["duplicate_rows"] == 1
    assert out["key_unique"].details["examples"] == [2]
    out = _check(spec, [_batch([1, 2]), _batch([]), _batch([2, 3])])
    assert (out["key_unique"].passed, out["key_unique"].details["examples"]) == (False, [2])
    out = _check(spec, [_batch([7]), _batch([7]), _batch([7])])  # one row per batch, three times
    assert out["key_unique"].details["duplicate_rows"] == 2
    assert out["key_unique"].details["examples"] == [7, 7]


def test_not_null_counts_every_batch_and_names_the_rows_by_key():
    out = _check(_orders(), [_batch([1, 2], [None, 2.0]), _batch([3, 4], [3.0, None])])
    nn = out["not_null"]
    assert nn.passed is False and nn.blocking is True
    assert nn.details["null_rows"] == {"amount": 2}
    assert nn.details["examples"] == {"amount": [1, 4]}
    assert _check(_orders(), [_batch([1, 2], [1.0, 2.0])])["not_null"].passed is True


def test_a_required_column_missing_from_the_snapshot_fails_not_null():
    spec = _orders(not_null=("id", "customer"))
    out = _check(spec, [_batch([1, 2])])
    assert out["not_null"].passed is False
    assert out["not_null"].details["missing_columns"] == ["customer"]


def test_min_rows_counts_rows_across_batches():
    spec = _orders(min_rows=3)
    assert _check(spec, [_batch([1, 2])])["min_rows"].passed is False
    out = _check(spec, [_batch([1, 2]), _batch([3])])
    assert out["min_rows"].passed is True
    assert out["min_rows"].details == {"row_count": 3, "min_rows": 3}
    empty = _check(_orders(), [_batch([])])
    assert empty["min_rows"].passed is False, "the default is at least one row"


def test_schema_change_is_compared_with_the_previous_partition_and_blocks_only_when_asked():
    before = [SchemaColumn(name="id", type="int64"), SchemaColumn(name="amount", type="double"),
              SchemaColumn(name="gone", type="string")]
    history = History(previous_partition="2024-01-01", previous_schema=before)
    batch = _batch([1], [1.0], ["paid"])
    schema = schema_to_json(batch.schema)
    schema[1]["type"] = "decimal128(10, 2)"
    out = _check(_orders(), [batch], history, schema)
    change = out["schema_unchanged"]
    assert change.passed is False and change.blocking is False
    assert change.details["compared_with"] == "2024-01-01"
    assert change.details["added"] == ["status"]
    assert change.details["removed"] == ["gone"]
    assert change.details["type_changed"] == {"amount": {"from": "double", "to": "decimal128(10, 2)"}}
    assert _check(_orders(schema_change="block"), [batch], history, schema)["schema_unchanged"].blocking is True
    same = History(previous_partition="2024-01-01", previous_schema=[SchemaColumn(**c) for c in schema])
    assert _check(_orders(), [batch], same, schema)["schema_unchanged"].passed is True
    first = _check(_orders(), [batch], History(), schema)["schema_unchanged"]
    assert first.passed is True and "no earlier partition" in first.details["note"]


def test_volume_compares_with_the_median_of_the_trailing_partitions():
    spec = _orders(volume={"trailing": 3, "tolerance": 0.5, "min_history": 2})
    ten = [_batch(list(range(10)))]
    few = _check(spec, ten, History(trailing_row_counts=[100]))["volume"]
    assert few.passed is True and "1 earlier partitions" in few.details["note"]
    # only the last 3 counts count: median 10 (the 1000 is older than the window)
    ok = _check(spec, ten, History(trailing_row_counts=[1000, 8, 10, 14]))["volume"]
    assert ok.passed is True
    assert ok.details["trailing_median"] == 10 and ok.details["trailing_partitions"] == 3
    collapsed = _check(spec, ten, History(trailing_row_counts=[30, 40, 50]))["volume"]
    assert collapsed.passed is False and collapsed.blocking is False
    assert collapsed.details["deviation"] == 0.75
    from_nothing = _check(spec, ten, History(trailing_row_counts=[0, 0, 0]))["volume"]
    assert from_nothing.passed is False and from_nothing.details["deviation"] == "inf"
    strict = _orders(volume={"trailing": 3, "tolerance": 0.5, "min_history": 2, "blocking": True})
    assert _check(strict, ten, History(trailing_row_counts=[30, 40, 50]))["volume"].blocking is True


def test_column_rules_count_each_violation_and_name_the_rows_by_key():
    spec = _orders(columns={"amount": {"min": 0, "max": 100, "blocking": True},
                            "status": {"accepted_values": ["paid", "open"], "max_null_fraction": 0.2}})
    batches = [_batch([1, 2, 3], [-1.0, 5.0, 500.0], ["paid", "lost", None]),
               _batch([4, 5], [None, 100.0], ["open", None])]
    out = _check(spec, batches)
    amount, status = out["column_rules_amount"], out["column_rules_status"]
    assert amount.passed is False and amount.blocking is True
    assert (amount.details["rows_below_min"], amount.details["rows_above_max"]) == (1, 1)
    assert amount.details["examples"] == [1, 3]
    assert status.passed is False and status.blocking is False
    assert status.details["rows_not_accepted"] == 1, "a NULL is not a rejected value"
    assert status.details["null_fraction"] == 0.4
    assert status.details["examples"] == [2]
    clean = _check(spec, [_batch([1, 2], [0.0, 100.0], ["paid", "open"])])
    assert clean["column_rules_amount"].passed is True and clean["column_rules_status"].passed is True
