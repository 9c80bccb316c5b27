"""``make demo``: the whole flow on embedded defaults, through Dagster, in a few seconds.

Everything lives under ``$SNAPSHOT_PLATFORM_HOME`` (default ``~/.snapshot_platform``): the SQLite
"production" database, the snapshot storage, and the Dagster home whose run history the UI shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from dagster import DagsterInstance, materialize

from snapshot_platform.assets.snapshots import snapshot_key
from snapshot_platform.catalog import load_catalog
from snapshot_platform.definitions import build_assets, build_resources
from snapshot_platform.demo import source_db
from snapshot_platform.resources import VERSION_METADATA_KEY
from snapshot_platform.home import platform_home
from snapshot_platform.store import STORAGE_ENV, SnapshotStore, default_storage_url


def _setup_environment() -> dict[str, Path]:
    home = platform_home()
    paths = {
        "home": home,
        "dagster_home": Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home"))),
        "demo_db": home / Path(os.environ.get("SNAPSHOT_PLATFORM_DEMO_DB") or "demo/production.sqlite"),
    }
    os.environ.setdefault(STORAGE_ENV, default_storage_url())
    paths["dagster_home"].mkdir(parents=True, exist_ok=True)
    config = paths["dagster_home"] / "dagster.yaml"
    if not config.exists():
        config.write_text("# written by the snapshot_platform demo; see deploy/ for production examples\n"
                          "telemetry:\n  enabled: false\n")
    return paths


def _say(text: str = "") -> None:
    click.echo(text)


def run_demo(fresh: bool = False) -> None:
    paths = _setup_environment()
    storage_url = os.environ[STORAGE_ENV]
    catalog = load_catalog()
    name = "customer_data"
    if name not in catalog.snapshots:
        raise click.ClickException(f"the demo needs the demo catalog; {catalog.path} has no {name!r}")
    db = paths["demo_db"]
    if fresh and db.exists():
        db.unlink()
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    if db.exists():
        change = source_db.evolve(db)
        _say(f"source database {db}: moved on since the last demo ({change})")
    else:
        source_db.create(db)
        _say(f"source database {db}: created")

    instance = DagsterInstance.get()
    assets = build_assets(catalog)
    resources = build_resources(storage_url)
    store = SnapshotStore(storage_url)
    key = snapshot_key(name)

    def snap(pk: str) -> tuple[str, bool, int]:
        result = materialize(assets, selection=[key], partition_key=pk, instance=instance,
                             resources=resources, tags={"snapshot_platform/demo": "true"},
                             run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        md = next(
            ev.event_specific_data.materialization.metadata
            for ev in result.get_asset_materialization_events()
            if ev.event_specific_data.materialization.asset_key == key
        )
        return str(md[VERSION_METADATA_KEY].value), bool(md["snapshot/new_version"].value), int(md["dagster/row_count"].value)

    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    _say("\n1. Snapshot three daily partitions through Dagster")
    first: dict[str, str] = {}
    for pk in days:
        version, new, rows = snap(pk)
        first[pk] = version
        _say(f"   {name}/{pk}: version {version}  {rows} rows  {'new' if new else 'already published'}")

    _say("\n2. Re-run an unchanged partition: the same content is the same version, nothing is written")
    version, new, _ = snap(days[0])
    _say(f"   {name}/{days[0]}: version {version}  new version: {new}")

    _say("\n3. Production moves on: churn labels change for customers who signed up on 2024-01-02")
    change = source_db.evolve(db)
    _say(f"   {change}")
    version, new, rows = snap(days[1])
    _say(f"   {name}/{days[1]}: version {version}  {rows} rows  new version: {new}")
    versions = [m["version"] for m in store.versions(name, days[1])]
    _say(f"   published versions of {days[1]}, oldest first: {', '.join(versions)}")
    old = store.read_table(name, days[1], first[days[1]])
    _say(f"   the earlier version {first[days[1]]} is intact and loadable: {old.num_rows} rows, hash-verified")

    _say("\nWhere everything is")
    _say(f"   source database   {db}")
    _say(f"   snapshots         {storage_url}")
    _say(f"   Dagster home      {paths['dagster_home']}")
    _say("\nNext")
    _say(f"   snapshot-platform list {name}            # every version of every partition")
    _say(f"   snapshot-platform show {name} {days[1]}   # a manifest")
    _say("   snapshot-platform verify                    # re-hash everything")
    _say("   make ui                                     # the Dagster UI on http://127.0.0.1:3000")
