"""``snapshot-platform drift``: each column's drift between snapshot partitions (``drift.py`` computes it).

It reports and exits 0 whatever the figures are; the drift check (``checks.drift``) decides.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from snapshot_platform.cli.common import EXIT_FAILED, EXIT_USAGE, catalog_of, store_of
from snapshot_platform.cli.render import emit
from snapshot_platform.store import IntegrityError, ManifestError, SnapshotNotFound


def _stop(as_json: bool, code: int, message: str, **fields: Any) -> None:
    if as_json:
        emit({**fields, "error": message})
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def render(report: dict[str, Any]) -> None:
    """One line per column: its figure (PSI) and whether it crossed the threshold."""
    against = ", ".join(f"{r['partition']}@{r['version']}" for r in report["against"]) or "nothing (no earlier partition)"
    click.echo(f"{report['asset']}/{report['partition']} version {report['version']} against {against}")
    click.echo(f"  {'column':<28} {'kind':<12} {report['statistic']:>10}  (threshold {report['threshold']:g})")
    for col, e in report["columns"].items():
        figure = "-" if e.get("figure") is None else f"{e['figure']:.4f}"
        mark = "CROSSED" if e["crossed"] else ""
        why = e.get("problem") or e.get("note") or ""
        click.echo(f"  {col:<28} {e['kind']:<12} {figure:>10}  {mark} {why}".rstrip())


@click.command(name="drift")
@click.argument("name")
@click.argument("partition")
@click.option("--against", "against", default=None,
              help="Compare with this partition's latest version (default: the trailing partitions, as the check does).")
@click.option("--version", "version", default=None, help="The version of PARTITION (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-column figures as JSON.")
@click.pass_context
def drift(ctx: click.Context, name: str, partition: str, against: str | None, version: str | None,
          as_json: bool) -> None:
    """Drift of each column of NAME/PARTITION against earlier partitions (population stability index).

    Columns, trailing partitions and threshold come from the catalog's drift check (checks.drift);
    without one: every column but the key, the trailing 7 partitions, 0.2. Numeric columns are
    binned by the reference's deciles, categorical ones compared by category shares. Exit 0 whatever
    the figures are (it reports; the check decides); 1 when a version is missing or corrupt; 2 usage.
    """
    from snapshot_platform.catalog import DriftCheckSpec
    from snapshot_platform.drift import compare, trailing_manifests

    store = store_of(ctx)
    fields = {"asset": name, "partition": partition}
    try:
        store.partitions(name)  # a name that cannot be a path component is a usage error
        m = store.read_manifest(name, partition, version)
        reference = ([store.read_manifest(name, against)] if against is not None
                     else None)
    except SnapshotNotFound as exc:
        _stop(as_json, EXIT_FAILED, str(exc), **fields)
        return
    except ManifestError as exc:
        _stop(as_json, EXIT_FAILED, str(exc), **fields)
        return
    except ValueError as exc:
        _stop(as_json, EXIT_USAGE, str(exc), **fields)
        return
    spec = None
    try:
        catalog = catalog_of(ctx)
        spec = catalog.snapshots[name].checks.drift if name in catalog.snapshots else None
    except click.ClickException:
        pass  # no usable catalog: the defaults below
    if spec is None:
        key = set(m.key or ())
        spec = DriftCheckSpec(columns=[c.name for c in m.schema if c.name not in key] or [m.schema[0].name])
    if reference is None:
        reference = trailing_manifests(store, name, partition, spec.trailing)
    try:
        _passed, details = compare(store, m, reference, spec.columns, spec.threshold)
    except IntegrityError as exc:
        _stop(as_json, EXIT_FAILED, f"corrupt snapshot: {exc}", **fields)
        return
    report = {"asset": name, "partition": partition, "version": m.version,
              "against": [{"partition": r.partition, "version": r.version} for r in reference], **details}
    if as_json:
        emit(report)
    else:
        render(report)


COMMANDS = (drift,)
