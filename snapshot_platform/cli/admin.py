"""Operating commands: pools (Dagster concurrency limits per source), demo."""

from __future__ import annotations

import os

import click

from snapshot_platform.cli import render
from snapshot_platform.cli.common import catalog_of


@click.command()
@click.option("--apply", "apply_", is_flag=True,
              help="Write the limits into the Dagster instance at $DAGSTER_HOME (else only print them).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pools(ctx: click.Context, apply_: bool, as_json: bool) -> None:
    """Each source's max_concurrent_queries (divided by its parallelism: reads of K connections) as the
    limit of its Dagster pool (source_<name>)."""
    from snapshot_platform.orchestration.pools import apply_pool_limits, pool_limits

    catalog = catalog_of(ctx)
    limits = pool_limits(catalog)
    changed: dict[str, int] = {}
    if apply_:
        from dagster import DagsterInstance

        if not os.environ.get("DAGSTER_HOME"):
            raise click.ClickException("DAGSTER_HOME is not set: there is no instance to write the limits into")
        with DagsterInstance.get() as instance:
            changed = apply_pool_limits(instance, catalog)
    if as_json:
        render.emit({"pools": limits, "changed": changed, "applied": apply_})
        return
    render.pool_limits(limits, changed, apply_)


@click.command()
@click.option("--fresh", is_flag=True, help="Start over with a new source database (published snapshots stay).")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary.")
def demo(fresh: bool, as_json: bool) -> None:
    """Run the demo end to end on embedded defaults (SQLite source, local storage, local Dagster home)."""
    from snapshot_platform.demo.run import run_demo

    summary = run_demo(fresh=fresh, as_json=as_json)
    if as_json:
        render.emit(summary)


COMMANDS = (pools, demo)
