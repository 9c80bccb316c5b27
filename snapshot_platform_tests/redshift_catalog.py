"""The Redshift tests' catalog and SQL helpers (engines/test_redshift.py, engines/test_types_redshift.py):
the Redshift source pointed at PostgreSQL, which speaks its protocol."""

from __future__ import annotations

from typing import Any

import psycopg

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.conftest import reader_url

DAY = "2024-03-10"


def make_catalog(source: dict[str, Any], query: str, key: list[str] | None = None) -> Catalog:
    if isinstance(source.get("url"), str):
        source = {**source, "url": reader_url(source["url"])}
    return parse_catalog({
        "sources": {"rs": {"kind": "redshift", "sslmode": "disable", **source}},
        "snapshots": {"snap": {"source": "rs", "query": query, "key": key or ["id"],
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)
