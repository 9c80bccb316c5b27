"""``parallelism`` on a catalog source: a whole number from 1, at most ``max_concurrent_queries``, and
only on engines that can share one snapshot between connections; errors name the file, the entry
and the field. The pool limit of a parallel source counts reads, not connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from snapshot_platform.catalog import CatalogError, load_catalog
from snapshot_platform.orchestration.pools import pool_limits

QUERY = "SELECT id, t FROM events WHERE t >= :partition_start AND t < :partition_end"

SOURCES: dict[str, dict[str, Any]] = {
    "postgres": {"kind": "postgres", "url": {"env": "WAREHOUSE_URL"}},
    "mysql": {"kind": "mysql", "url": {"env": "MYSQL_URL"}},
    "redshift": {"kind": "redshift", "url": {"env": "REDSHIFT_URL"}},
    "snowflake": {"kind": "snowflake", "account": "acme-xy12345", "user": "reader",
                  "password": {"env": "SNOWFLAKE_PASSWORD"}, "database": "PROD", "warehouse": "WH"},
    "bigquery": {"kind": "bigquery", "project": "acme-prod"},
    "sqlite": {"kind": "sqlite", "path": "prod.sqlite"},
}


def _catalog(tmp_path: Path, source: dict[str, Any]) -> Path:
    path = tmp_path / "snapshots.yaml"
    path.write_text(yaml.safe_dump({
        "sources": {"warehouse": source},
        "snapshots": {"events": {"source": "warehouse", "query": QUERY, "key": ["id"],
                                 "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    }))
    return path


def _error(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value)


def test_postgres_takes_parallelism_and_its_pool_counts_reads(tmp_path: Path) -> None:
    source = {**SOURCES["postgres"], "parallelism": 2, "max_concurrent_queries": 5}
    catalog = load_catalog(_catalog(tmp_path, source))
    spec = catalog.sources["warehouse"]
    assert spec.parallelism == 2
    assert spec.reads_at_once == 2  # two reads of two connections: 4 of the 5 queries
    assert pool_limits(catalog) == {"source_warehouse": 2}
    default = load_catalog(_catalog(tmp_path, SOURCES["postgres"])).sources["warehouse"]
    assert default.parallelism == 1 and default.reads_at_once == default.max_concurrent_queries == 2


@pytest.mark.parametrize("value, needle", [
    (0, "greater than or equal to 1"),
    (-2, "greater than or equal to 1"),
    (65, "less than or equal to 64"),
    ("two", "valid integer"),
    (1.5, "valid integer"),
    (3, "3 connections per read exceed max_concurrent_queries (2)"),
])
def test_bad_parallelism_names_file_entry_and_field(tmp_path: Path, value: Any, needle: str) -> None:
    path = _catalog(tmp_path, {**SOURCES["postgres"], "parallelism": value})
    msg = _error(path)
    assert f"{path}: sources.warehouse: field 'parallelism'" in msg, msg
    assert needle in msg, msg


@pytest.mark.parametrize("kind, why", [
    ("mysql", "RELOAD privilege"),
    ("redshift", "no pg_export_snapshot()"),
    ("snowflake", "time travel"),
    ("bigquery", "FOR SYSTEM_TIME AS OF"),
    ("sqlite", "read transaction"),
])
def test_engines_that_cannot_share_a_snapshot_refuse_parallelism(tmp_path: Path, kind: str, why: str) -> None:
    path = _catalog(tmp_path, {**SOURCES[kind], "parallelism": 2})
    msg = _error(path)
    where = f"{path}: sources.warehouse: field 'parallelism'"
    assert f"{where}: a {kind} source reads a partition over one connection" in msg
    assert why in msg, msg
    # parallelism: 1 is every engine's default and always accepted
    one = load_catalog(_catalog(tmp_path, {**SOURCES[kind], "parallelism": 1}))
    assert one.sources["warehouse"].parallelism == 1
