"""``snapshot-platform changed NAME``: the recent partitions whose source changed (changes.py)."""

from __future__ import annotations

import click

from snapshot_platform.catalog import CatalogError
from snapshot_platform.cli import render
from snapshot_platform.cli.common import catalog_of, store_of, unknown_snapshot
from snapshot_platform.secrets import SecretMissingError
from snapshot_platform.sources.base import SourceError


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a list of {partition, version, recorded, current}.")
@click.pass_context
def changed(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the partitions of NAME whose source changed since their latest version.

    Runs the catalog's change_probe now for the last `lookback` partitions that have a version and
    lists those whose fingerprint differs from the one recorded with their latest version. Exit 0
    whether or not anything changed; 1 when the source cannot be read; 2 for an unknown snapshot or
    one without a change_probe."""
    from snapshot_platform.changes import changed_partitions
    from snapshot_platform.sources import make_source

    catalog = catalog_of(ctx)
    if name not in catalog.snapshots:
        raise unknown_snapshot(name, sorted(catalog.snapshots), catalog, None)
    spec = catalog.snapshots[name]
    if spec.change_probe is None:
        raise click.UsageError(f"snapshot {name} has no change_probe in {catalog.path}", ctx)
    try:
        found = changed_partitions(spec, make_source(spec.source, catalog.sources[spec.source]), store_of(ctx), name)
    except (CatalogError, SourceError, SecretMissingError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        render.emit([c.as_dict() for c in found])
        return
    if not found:
        click.echo(f"{name}: no partition changed at the source (last {spec.change_probe.lookback} with a version)")
    for c in found:
        click.echo(f"{name}/{c.partition}: changed since version {c.version}: recorded {c.recorded}, now {c.current}")


COMMANDS = (changed,)
