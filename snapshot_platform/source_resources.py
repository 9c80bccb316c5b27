"""Catalog sources as Dagster resources, and their query limits as Dagster concurrency pools.

Every source in the catalog becomes a ``ConfigurableResource`` under the key ``source_<name>``, one
class per engine (``MySQLSourceResource``, ``RedshiftSourceResource``, ...), so the UI lists each
database with its kind and settings, a job can swap one for another in tests
(``materialize(..., resources={"source_warehouse": ...})``), and the snapshot asset gets its
:class:`~snapshot_platform.sources.Source` from it. Its settings are the catalog's validated spec,
in which secrets are only references (``{env: NAME}``, ``{aws_secret: NAME, key: ...}``): they are
resolved when a connection opens, so no secret is ever part of a resource's config, the UI or the
run's event log. The catalog stays the single place a source is declared; without Dagster (the
``snapshot-platform`` CLI, the benchmark) the same spec builds the same Source.

``max_concurrent_queries`` is enforced as the limit of the source's Dagster concurrency pool
(``source_<name>``, the pool of every snapshot asset reading from it): :func:`apply_pool_limits`
writes it into the instance (``snapshot-platform pools --apply`` before a backfill), and every
snapshot step checks its own pool's limit when it starts and corrects it when it differs.
"""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, TypeAdapter

from snapshot_platform.catalog import Catalog
from snapshot_platform.sources import REGISTRY, Source, SourceSpec, make_source

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


def pool_limits(catalog: Catalog) -> dict[str, int]:
    from snapshot_platform.assets.snapshots import source_pool

    return {source_pool(name): spec.max_concurrent_queries for name, spec in catalog.sources.items()}


def ensure_pool_limit(instance: Any, pool: str, limit: int) -> bool:
    """Set ``pool``'s slot count to ``limit`` unless it already is; True when it changed something."""
    storage = getattr(instance, "event_log_storage", None)
    if storage is None or not getattr(storage, "supports_global_concurrency_limits", False):
        return False
    if storage.get_concurrency_info(pool).slot_count == limit:
        return False
    storage.set_concurrency_slots(pool, limit)
    return True


def apply_pool_limits(instance: Any, catalog: Catalog) -> dict[str, int]:
    """Write every source's ``max_concurrent_queries`` as its pool's limit; the pools that changed."""
    changed = {}
    for pool, limit in pool_limits(catalog).items():
        if ensure_pool_limit(instance, pool, limit):
            changed[pool] = limit
    return changed
