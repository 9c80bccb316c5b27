"""One module per database engine, all behind :class:`~snapshot_platform.sources.base.Source`."""

from __future__ import annotations

from typing import Any

from snapshot_platform.sources.base import Source, SourceError, SourceRead, Window
from snapshot_platform.sources.bigquery import BigQuerySource
from snapshot_platform.sources.mysql import MySQLSource
from snapshot_platform.sources.postgres import PostgresSource
from snapshot_platform.sources.redshift import RedshiftSource
from snapshot_platform.sources.snowflake import SnowflakeSource
from snapshot_platform.sources.sqlite import SqliteSource

SOURCE_CLASSES: dict[str, type[Source]] = {
    "sqlite": SqliteSource,
    "postgres": PostgresSource,
    "mysql": MySQLSource,
    "redshift": RedshiftSource,
    "bigquery": BigQuerySource,
    "snowflake": SnowflakeSource,
}


def make_source(name: str, spec: Any) -> Source:
    """The source object for a validated catalog source spec."""
    return SOURCE_CLASSES[spec.kind](name, spec)


__all__ = ["SOURCE_CLASSES", "Source", "SourceError", "SourceRead", "Window", "make_source"]
