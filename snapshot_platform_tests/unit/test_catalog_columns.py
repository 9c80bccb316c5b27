"""The catalog's column descriptions and owners (issue 14 §6): carried into the asset's column schema
and owners; a bad entry is an error naming the file, the entry and the field."""

from __future__ import annotations

import pytest
import yaml
from dagster import AssetKey

from snapshot_platform.capture import SnapshotOutcome
from snapshot_platform.catalog import CatalogError, load_catalog
from snapshot_platform.orchestration.definitions import build_definitions
from snapshot_platform.orchestration.metadata import snapshot_metadata
from snapshot_platform.store import PublishResult
from snapshot_platform.store.manifest import Manifest

SNAPSHOT = {
    "source": "db",
    "query": "SELECT id, day, amount FROM t WHERE day >= :partition_start AND day < :partition_end",
    "partitions": {"cadence": "daily", "start": "2024-01-01"},
    "key": ["id"],
    "owners": ["team:growth", "ana@example.com"],
    "columns": {"id": "Order id", "amount": "Order total, in euros"},
}


def write(tmp_path, snapshot):
    path = tmp_path / "snapshots.yaml"
    path.write_text(yaml.safe_dump({"sources": {"db": {"kind": "sqlite", "path": "x.sqlite"}},
                                    "snapshots": {"orders": snapshot}}))
    return path


def test_owners_and_column_descriptions_reach_the_asset(tmp_path):
    catalog = load_catalog(write(tmp_path, SNAPSHOT))
    assert catalog.snapshots["orders"].columns == {"id": "Order id", "amount": "Order total, in euros"}
    defs = build_definitions(catalog, storage_url=str(tmp_path / "storage"))
    (spec,) = [s for s in defs.resolve_all_asset_specs() if s.key == AssetKey(["snapshots", "orders"])]
    assert spec.owners == ["team:growth", "ana@example.com"]


def test_the_materialization_schema_carries_the_descriptions():
    manifest = Manifest.from_dict({
        "format_version": 2, "asset": "orders", "partition": "2024-01-01", "version": "0" * 20,
        "created_at": "2024-01-02T00:00:00+00:00", "row_count": 0, "files": [],
        "schema": [{"name": "id", "type": "int64"}, {"name": "day", "type": "date32[day]"},
                   {"name": "amount", "type": "double"}],
        "query": "SELECT 1", "query_sha256": "0" * 64, "params": {}, "source": {}, "source_state": {},
        "window": {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"},
        "dagster_run_id": None, "code_version": "c", "library_versions": {},
    }, where="test")
    outcome = SnapshotOutcome(PublishResult("0" * 20, True, manifest, "file:///x"), 1.0, 1, {})
    schema = snapshot_metadata(outcome, None, SNAPSHOT["columns"])["dagster/column_schema"]
    assert {c.name: c.description for c in schema.columns} == {
        "id": "Order id", "day": None, "amount": "Order total, in euros"}


@pytest.mark.parametrize("columns, field, says", [
    ({"amount": ""}, "columns", "description is empty"),
    ({"amount": ["a", "list"]}, "columns.amount", "string"),
    (["id", "amount"], "columns", "dictionary"),
])
def test_a_bad_columns_entry_names_file_entry_and_field(tmp_path, columns, field, says):
    path = write(tmp_path, {**SNAPSHOT, "columns": columns})
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert str(path) in msg and "snapshots.orders" in msg and field in msg and says in msg, msg
