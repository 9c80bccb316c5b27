"""Source query limits as Dagster concurrency pools.

``max_concurrent_queries`` is enforced as the limit of the source's Dagster concurrency pool
(``source_<name>``, the pool of every snapshot asset reading from it; a source with ``parallelism: K``
reads over K connections, so its pool admits ``max_concurrent_queries // K`` reads): :func:`apply_pool_limits`
writes it into the instance (``snapshot-platform pools --apply`` before a backfill), and every
snapshot step checks its own pool's limit when it starts and corrects it when it differs.
"""

from __future__ import annotations

from typing import Any

from snapshot_platform.catalog import Catalog


def source_pool(source: str) -> str:
    """The Dagster concurrency pool that bounds concurrent queries against one source."""
    return f"source_{source}"


def pool_limits(catalog: Catalog) -> dict[str, int]:
    """Each source's pool limit: its reads at once (``max_concurrent_queries``, divided by the
    ``parallelism`` connections each read holds)."""
    return {source_pool(name): spec.reads_at_once for name, spec in catalog.sources.items()}


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
