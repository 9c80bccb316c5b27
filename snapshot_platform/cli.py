"""``snapshot-platform``: snapshot, list, show and verify without a Dagster instance.

Every subcommand takes ``--json`` for scripts. ``verify`` exits non-zero on any mismatch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from snapshot_platform.catalog import CatalogError, load_catalog
from snapshot_platform.gate import blocking_failures
from snapshot_platform.store import ManifestError, SnapshotNotFound, SnapshotStore, default_storage_url


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _store(ctx: click.Context) -> SnapshotStore:
    return SnapshotStore(ctx.obj["storage"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--storage", envvar="SNAPSHOT_PLATFORM_STORAGE_URL", default=None,
              help="Storage root (default $SNAPSHOT_PLATFORM_STORAGE_URL or ~/.snapshot_platform/storage).")
@click.option("--catalog", "catalog_path", envvar="SNAPSHOT_PLATFORM_CATALOG", default=None,
              help="Catalog YAML (default $SNAPSHOT_PLATFORM_CATALOG or the demo catalog).")
@click.pass_context
def main(ctx: click.Context, storage: str | None, catalog_path: str | None) -> None:
    """Pinned, immutable, verifiable snapshots of production databases."""
    ctx.ensure_object(dict)
    ctx.obj["storage"] = storage or default_storage_url()
    ctx.obj["catalog"] = catalog_path


@main.command()
@click.argument("name")
@click.argument("partition")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def snapshot(ctx: click.Context, name: str, partition: str, as_json: bool) -> None:
    """Snapshot partition PARTITION of catalog entry NAME now (no Dagster run is recorded)."""
    from snapshot_platform.snapshotter import take_snapshot

    try:
        catalog = load_catalog(ctx.obj["catalog"])
        if name not in catalog.snapshots:
            raise click.ClickException(f"{name!r} is not a snapshot in {catalog.path}")
        outcome = take_snapshot(catalog, name, partition, _store(ctx))
    except (CatalogError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    m = outcome.result.manifest
    if as_json:
        _emit({"created": outcome.result.created, "seconds": outcome.seconds, "manifest": m})
        return
    verb = "published" if outcome.result.created else "unchanged, already published as"
    click.echo(f"{name}/{partition}: {verb} version {m['version']} ({m['row_count']} rows, {outcome.seconds:.2f}s)")
    click.echo(f"  {outcome.result.uri}")


@main.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List snapshots, or the partitions and versions of snapshot NAME."""
    store = _store(ctx)
    if name is None:
        rows = []
        for asset in store.assets():
            parts = store.partitions(asset)
            n_versions = sum(len(store.versions(asset, p)) for p in parts)
            rows.append({"asset": asset, "partitions": len(parts), "versions": n_versions,
                         "latest_partition": parts[-1] if parts else None})
        if as_json:
            _emit(rows)
            return
        if not rows:
            click.echo(f"no snapshots in {store}")
        for r in rows:
            click.echo(f"{r['asset']}: {r['partitions']} partitions, {r['versions']} versions, "
                       f"latest partition {r['latest_partition']}")
        return
    rows = []
    for p in store.partitions(name):
        for m in store.versions(name, p):
            rows.append({"partition": p, "version": m["version"], "created_at": m["created_at"],
                         "row_count": m["row_count"], "dagster_run_id": m.get("dagster_run_id")})
    if as_json:
        _emit(rows)
        return
    if not rows:
        click.echo(f"no published versions of {name} in {store}")
    for r in rows:
        click.echo(f"{name}/{r['partition']}  {r['version']}  {r['row_count']:>10} rows  {r['created_at']}")


@main.command()
@click.argument("name")
@click.argument("partition")
@click.option("--version", "version", default=None, help="A version id (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.pass_context
def show(ctx: click.Context, name: str, partition: str, version: str | None, as_json: bool) -> None:
    """Show the manifest of one snapshot version."""
    try:
        m = _store(ctx).read_manifest(name, partition, version)
    except (SnapshotNotFound, ManifestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _emit(m)
        return
    click.echo(f"{m['asset']}/{m['partition']} version {m['version']}")
    click.echo(f"  created     {m['created_at']}  (dagster run {m['dagster_run_id']})")
    click.echo(f"  window      [{m['window']['start']}, {m['window']['end']})")
    click.echo(f"  rows        {m['row_count']}")
    src = m["source"]
    click.echo(f"  source      {src.get('name')} ({src.get('kind')}, host {src.get('host')}, database {src.get('database')})")
    click.echo(f"  state       {json.dumps(m['source_state'], default=str)}")
    click.echo(f"  code        {m['code_version']}  query sha256 {m['query_sha256'][:16]}")
    click.echo("  schema")
    for c in m["schema"]:
        click.echo(f"    {c['name']:<28} {c['type']}")
    click.echo("  files")
    for f in m["files"]:
        click.echo(f"    {f['path']}  {f['rows']} rows  {f['bytes']} bytes  sha256 {f['sha256']}")
    click.echo("  checks")
    if not m.get("checks"):
        click.echo("    (none recorded)")
    for check_name, c in (m.get("checks") or {}).items():
        status = "passed" if c["passed"] else ("FAILED" if c["blocking"] else "warning")
        kind = "blocking" if c["blocking"] else "warn"
        click.echo(f"    {check_name:<28} {status:<8} ({kind})  {json.dumps(c.get('details', {}), default=str)}")
    failed = blocking_failures(m)
    if failed:
        click.echo(f"  NOT TRAINABLE: failed blocking checks {', '.join(failed)}")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--fail-on-checks", is_flag=True, help="Also exit 1 when a version failed a blocking check.")
@click.pass_context
def verify(ctx: click.Context, name: str | None, as_json: bool, fail_on_checks: bool) -> None:
    """Re-hash every file of every version (of NAME, or of all snapshots); exit 1 on any mismatch.

    Also reports each version's recorded check outcomes."""
    store = _store(ctx)
    assets = [name] if name else store.assets()
    results = []
    for asset in assets:
        for p in store.partitions(asset):
            try:
                manifests = store.versions(asset, p)
            except ManifestError as exc:
                results.append({"asset": asset, "partition": p, "version": None, "ok": False,
                                "problems": [str(exc)]})
                continue
            for m in manifests:
                problems = store.verify_version(m)
                failed_checks = blocking_failures(m)
                warned = sorted(n for n, c in (m.get("checks") or {}).items() if not c["passed"] and not c["blocking"])
                ok = not problems and not (fail_on_checks and failed_checks)
                results.append({"asset": asset, "partition": p, "version": m["version"],
                                "ok": ok, "problems": problems, "failed_blocking_checks": failed_checks,
                                "check_warnings": warned})
    bad = [r for r in results if not r["ok"]]
    if as_json:
        _emit({"ok": not bad, "checked": len(results), "results": results})
    else:
        for r in results:
            status = "ok" if r["ok"] else "FAILED"
            click.echo(f"{status:<6} {r['asset']}/{r['partition']}/{r['version']}")
            for pr in r["problems"]:
                click.echo(f"       {pr}")
            if r["failed_blocking_checks"]:
                click.echo(f"       blocking checks failed (not trainable): {', '.join(r['failed_blocking_checks'])}")
            if r["check_warnings"]:
                click.echo(f"       check warnings: {', '.join(r['check_warnings'])}")
        click.echo(f"{len(results)} versions checked, {len(bad)} failed")
    if name and not results:
        click.echo(f"no published versions of {name} in {store}", err=True)
        sys.exit(1)
    if bad:
        sys.exit(1)


@main.command()
@click.option("--fresh", is_flag=True, help="Start over: a new source database and empty demo storage.")
def demo(fresh: bool) -> None:
    """Run the demo end to end on embedded defaults (SQLite source, local storage, local Dagster home)."""
    from snapshot_platform.demo.run import run_demo

    run_demo(fresh=fresh)


if __name__ == "__main__":
    main()
