"""``snapshot-platform report NAME``: one self-contained HTML page (snapshot_platform/html_report.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from snapshot_platform.cli.common import EXIT_FAILED, NoData, require_snapshot, store_of, tracking_option


@click.command("report")
@click.argument("name")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default <NAME>-report.html in the current folder).")
@tracking_option
@click.option("--no-runs", is_flag=True, help="Do not ask MLflow which runs used the versions.")
@click.pass_context
def report(ctx: click.Context, name: str, out: Path | None, tracking_uri: str | None, no_runs: bool) -> None:
    """Write one self-contained HTML page about snapshot NAME: rows per partition and version over
    time, null fractions and value ranges per column, check outcomes per partition, and the MLflow
    runs that trained on its versions (linked to the MLflow UI when $SNAPSHOT_PLATFORM_MLFLOW_UI_URL
    is set or the tracking URI is an http(s) server).

    Exit status: 0 written; 1 written, but a version did not verify (the page names it), or NAME has
    no published version (nothing written); 2 NAME is not a known snapshot."""
    from snapshot_platform.html_report import collect, render

    store = store_of(ctx)
    require_snapshot(ctx, store, name)
    data = collect(store, name, tracking_uri, with_runs=not no_runs)
    if not data.partitions:
        raise NoData(f"{name}: no published version in {data.storage}")
    out = out or Path(f"{name}-report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(out)
    click.echo(f"{out}: {len(data.partitions)} partitions, "
               f"{sum(len(p.versions) for p in data.partitions)} versions, {len(data.runs)} model runs")
    for problem in data.problems:
        click.echo(f"not verified: {problem}", err=True)
    if data.problems:
        sys.exit(EXIT_FAILED)


COMMANDS = [report]
