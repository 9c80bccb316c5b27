"""Dagster resources: where snapshots are stored, where training runs are logged, and the catalog's sources.

Every source in the catalog becomes a ``ConfigurableResource`` under the key ``source_<name>``, one
class per engine (``MySQLSourceResource``, ``RedshiftSourceResource``, ...), so the UI lists each
database with its kind and settings, a job can swap one for another in tests
(``materialize(..., resources={"source_warehouse": ...})``), and the snapshot asset gets its
:class:`~snapshot_platform.sources.Source` from it. Its settings are the catalog's validated spec,
in which secrets are only references (``{env: NAME}``, ``{aws_secret: NAME, key: ...}``): they are
resolved when a connection opens, so no secret is ever part of a resource's config, the UI or the
run's event log. The catalog stays the single place a source is declared; without Dagster (the
``snapshot-platform`` CLI, the benchmark) the same spec builds the same Source.
"""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, TypeAdapter

from snapshot_platform.catalog import Catalog
from snapshot_platform.sources import REGISTRY, Source, SourceSpec, make_source
from snapshot_platform.store import SnapshotStore, default_storage_url
from snapshot_platform.training.mlflow_logging import MlflowTracking, default_tracking_uri

SNAPSHOT_STORE_RESOURCE_KEY = "snapshot_store"
MLFLOW_RESOURCE_KEY = "mlflow"


class SnapshotStoreResource(ConfigurableResource):
    """The snapshot store: a local path or an s3://, gs://, az:// URL (SNAPSHOT_PLATFORM_STORAGE_URL)."""

    storage_url: str = Field(
        default_factory=default_storage_url,
        description="Storage root for snapshots; default $SNAPSHOT_PLATFORM_STORAGE_URL or ~/.snapshot_platform/storage",
    )

    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the storage backend (e.g. S3 server-side encryption); no secrets here: "
        "credentials come from the environment or the machine's identity",
    )

    def get_store(self) -> SnapshotStore:
        return SnapshotStore(self.storage_url, storage_options=self.storage_options or None)


class MlflowResource(ConfigurableResource):
    """Where training runs are logged: an MLflow tracking URI (and, for a local store, its artifact root)."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///<platform home>/mlflow.db",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Artifact location for new experiments; default mlartifacts/ beside a local SQLite store",
    )

    def tracking(self) -> MlflowTracking:
        return MlflowTracking(self.tracking_uri or default_tracking_uri(), self.artifact_root)


# ---------------------------------------------------------------- sources

_SPEC = TypeAdapter(SourceSpec)


def source_resource_key(source: str) -> str:
    return f"source_{source}"


class SourceResource(ConfigurableResource):
    """A catalog source: opens read-only, consistent, time-bounded reads of one database."""

    source_name: str = Field(description="the source's name in the catalog")
    kind: str = Field(description="the engine")
    settings_json: str = Field(
        description="the catalog's validated settings; secrets appear only as {env:} / {aws_secret:} references"
    )

    def spec(self) -> Any:
        return _SPEC.validate_python(json.loads(self.settings_json))

    def get_source(self) -> Source:
        return make_source(self.source_name, self.spec())


def _resource_class(kind: str) -> type[SourceResource]:
    """``PostgresSourceSpec`` -> ``PostgresSourceResource``, its docstring from the registry (the UI shows it)."""
    engine = REGISTRY[kind]
    name = engine.spec.__name__.removesuffix("Spec") + "Resource"
    return type(name, (SourceResource,), {"__doc__": engine.resource_description, "__module__": __name__})


# one resource class per engine: SqliteSourceResource, PostgresSourceResource, MySQLSourceResource, ...
RESOURCE_CLASSES: dict[str, type[SourceResource]] = {kind: _resource_class(kind) for kind in REGISTRY}
globals().update({cls.__name__: cls for cls in RESOURCE_CLASSES.values()})


def source_resource(name: str, spec: Any) -> SourceResource:
    settings = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    settings["kind"] = spec.kind
    return RESOURCE_CLASSES[spec.kind](source_name=name, kind=spec.kind, settings_json=json.dumps(settings, sort_keys=True))


def source_resources(catalog: Catalog) -> dict[str, SourceResource]:
    """``source_<name>`` → its resource, for every source a snapshot reads from."""
    used = {s.source for s in catalog.snapshots.values()}
    return {source_resource_key(n): source_resource(n, spec) for n, spec in catalog.sources.items() if n in used}
