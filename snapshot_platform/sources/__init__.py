"""The engines: one module each (its catalog spec, its source, its type mapping), one line each in
:data:`REGISTRY`. Everything else that lists engines (the catalog's ``SourceSpec`` union, the
validation of queries, the Dagster resource classes) is derived from the registry.

Adding an engine: write ``sources/<engine>.py`` with a spec class (``SourceSpecBase`` plus
``kind: Literal["<engine>"]``) and a :class:`~snapshot_platform.sources.base.Source` (through
:class:`~snapshot_platform.sources.dbapi.DbapiSource` for a DB-API driver), then add its line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field

from snapshot_platform.sources.base import Source, SourceError, SourceRead, SourceSpecBase, Window
from snapshot_platform.sources.bigquery import BigQuerySource, BigQuerySourceSpec
from snapshot_platform.sources.mysql import MySQLSource, MySQLSourceSpec
from snapshot_platform.sources.postgres import PostgresSource, PostgresSourceSpec
from snapshot_platform.sources.redshift import RedshiftSource, RedshiftSourceSpec
from snapshot_platform.sources.snowflake import SnowflakeSource, SnowflakeSourceSpec
from snapshot_platform.sources.sqlite import SqliteSource, SqliteSourceSpec


@dataclass(frozen=True)
class Engine:
    """One engine: its catalog spec, its source, and the dialect facts the catalog and the SQL need."""

    spec: type[SourceSpecBase]
    source: type[Source]
    resource_description: str  # the docstring of its Dagster resource class (shown in the UI)
    backslash_escapes: bool = False  # string literals take backslash escapes ('it\'s')
    snapshot_time: bool = False  # a query may pin its tables to the read's start with :snapshot_time


REGISTRY: dict[str, Engine] = {
    "sqlite": Engine(SqliteSourceSpec, SqliteSource, "SQLite file opened read-only (the demo's production database)."),
    "postgres": Engine(PostgresSourceSpec, PostgresSource, "PostgreSQL through ADBC: REPEATABLE READ READ ONLY, statement timeout, optional replica-lag guard."),
    "mysql": Engine(MySQLSourceSpec, MySQLSource, "MySQL / MariaDB: START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY; GTID as source_state.", backslash_escapes=True),
    "redshift": Engine(RedshiftSourceSpec, RedshiftSource, "Amazon Redshift: stored credentials or IAM GetClusterCredentials; server-side cursor batches."),
    "bigquery": Engine(BigQuerySourceSpec, BigQuerySource, "Google BigQuery: service account key or ADC; FOR SYSTEM_TIME AS OF pin; maximum_bytes_billed.", backslash_escapes=True, snapshot_time=True),
    "snowflake": Engine(SnowflakeSourceSpec, SnowflakeSource, "Snowflake: password or key pair; bound parameters; query id as source_state.", backslash_escapes=True, snapshot_time=True),
}

for _kind, _engine in REGISTRY.items():
    if _engine.source.kind != _kind or _engine.spec.model_fields["kind"].annotation.__args__ != (_kind,):
        raise TypeError(f"sources registry: the line for {_kind!r} names another engine's spec or source")

SOURCE_KINDS = tuple(REGISTRY)
# engines whose queries may pin their tables to the read's start with :snapshot_time
SNAPSHOT_TIME_KINDS = tuple(k for k, e in REGISTRY.items() if e.snapshot_time)

# the catalog's ``sources:`` entry: one of the engines' specs, chosen by ``kind``
SourceSpec = Annotated[Union[tuple(e.spec for e in REGISTRY.values())], Field(discriminator="kind")]  # type: ignore[valid-type]


def make_source(name: str, spec: Any) -> Source:
    """The source object for a validated catalog source spec."""
    return REGISTRY[spec.kind].source(name, spec)


__all__ = [
    "REGISTRY", "SNAPSHOT_TIME_KINDS", "SOURCE_KINDS", "Engine", "Source", "SourceError", "SourceRead",
    "SourceSpec", "SourceSpecBase", "Window", "make_source",
]
