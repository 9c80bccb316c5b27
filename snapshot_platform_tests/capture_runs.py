"""Take a snapshot the way the CLI does: the catalog's spec and source, the window of a partition key.

``capture.take_snapshot`` takes the snapshot's spec, its source and its window; the tests name a
catalog entry and a partition key, so this helper does the CLI's lookups (``snapshot_platform
snapshot``) once and calls it. Not a test module: shared by the source, type and safety tests.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml

from snapshot_platform import capture
from snapshot_platform.catalog import Catalog
from snapshot_platform.demo import source_db
from snapshot_platform.orchestration.partitions import window_for
from snapshot_platform.sources import Source, Window, make_source
from snapshot_platform.store import SnapshotStore


def take_snapshot(
    catalog: Catalog,
    name: str,
    partition_key: str,
    store: SnapshotStore,
    dagster_run_id: str | None = None,
    window: Window | None = None,
    sleep: Callable[[float], None] = time.sleep,
    source: Source | None = None,
) -> capture.SnapshotOutcome:
    if name not in catalog.snapshots:
        raise KeyError(f"{name!r} is not a snapshot in {catalog.path}")
    spec = catalog.snapshots[name]
    window = window or window_for(spec.partitions, partition_key)
    source = source if source is not None else make_source(spec.source, catalog.sources[spec.source])
    return capture.take_snapshot(spec, source, window, store, name=name, partition_key=partition_key,
                                 dagster_run_id=dagster_run_id, sleep=sleep)


# the demo source's customers of a partition's window (the generated SQLite file of make demo)
DEMO_QUERY = ("SELECT customer_id, signup_date, churn_label FROM customers "
              "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)")


def demo_catalog(base: Path, snapshots: dict[str, Any]) -> Path:
    """``base/snapshots.yaml``: ``snapshots`` read from the source ``demo_db``, the demo's generated
    SQLite file written to ``base/production.sqlite``."""
    db = base / "production.sqlite"
    source_db.create(db)
    path = base / "snapshots.yaml"
    path.write_text(yaml.safe_dump({"sources": {"demo_db": {"kind": "sqlite", "path": str(db)}},
                                    "snapshots": snapshots}, sort_keys=False))
    return path
