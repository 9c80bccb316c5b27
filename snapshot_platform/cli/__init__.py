"""``snapshot-platform``: snapshot, list, show, verify and gc without a Dagster instance.

Every subcommand takes ``--json`` for scripts. ``verify`` exits non-zero on any mismatch.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import click

from snapshot_platform.catalog import CatalogError, SecretMissingError, load_catalog
from snapshot_platform.sources.base import SourceError
from snapshot_platform.gate import blocking_failures
from snapshot_platform.store import (
    IntegrityError,
    ManifestError,
    SnapshotNotFound,
    SnapshotStore,
    default_storage_url,
)


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _store(ctx: click.Context) -> SnapshotStore:
    return SnapshotStore(ctx.obj["storage"])


def _check_name(store: SnapshotStore, name: str | None) -> None:
    """A snapshot name that cannot be a storage path component is a usage error, not a traceback."""
    if name is not None:
        try:
            store.partitions(name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None


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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: it takes Ctrl-C's clean path (a KeyboardInterrupt, so no
    ``except Exception`` swallows it, and the store waits for its reader thread as for Ctrl-C)."""


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


@main.command()
@click.argument("name")
@click.argument("partition")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--allow-open-window", is_flag=True,
              help="Snapshot a partition whose window has not closed yet (its rows may still change).")
@click.pass_context
def snapshot(ctx: click.Context, name: str, partition: str, as_json: bool, allow_open_window: bool) -> None:
    """Snapshot partition PARTITION of catalog entry NAME now (no Dagster run is recorded).

    PARTITION must be one of the catalog's partitions in its canonical form (daily: YYYY-MM-DD),
    within its start and end, and closed (unless --allow-open-window); otherwise exit 2. A version
    that failed a blocking check stays published as evidence and the command exits 1 (not trainable).

    Exit status: 0 published (or already published), 1 failed (one line on stderr naming the cause:
    the source's error, a full disk, a refused write), 130 interrupted by Ctrl-C (SIGINT), 143
    terminated by SIGTERM. On every failure the staging data is removed and nothing is published."""
    from snapshot_platform.store import StorageWriteError

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from snapshot_platform.partitions import PartitionKeyError, window_for
        from snapshot_platform.snapshotter import take_snapshot

        catalog = load_catalog(ctx.obj["catalog"])
        if name not in catalog.snapshots:
            raise click.ClickException(f"{name!r} is not a snapshot in {catalog.path}")
        try:
            window = window_for(catalog.snapshots[name].partitions, partition, allow_open=allow_open_window)
        except PartitionKeyError as exc:
            raise click.UsageError(str(exc), ctx) from None
        outcome = take_snapshot(catalog, name, partition, _store(ctx), window=window)
    except (CatalogError, ValueError, SourceError, SecretMissingError, StorageWriteError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    except _Terminated:
        click.echo(f"snapshot-platform: {name}/{partition} terminated (SIGTERM); nothing published", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo(f"snapshot-platform: {name}/{partition} interrupted (Ctrl-C); nothing published", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    m = outcome.result.manifest
    if as_json:
        _emit({"created": outcome.result.created, "seconds": outcome.seconds, "manifest": m})
        _exit_if_untrainable(name, partition, m["version"], outcome.checks)
        return
    verb = "published" if outcome.result.created else "unchanged, already published as"
    click.echo(f"{name}/{partition}: {verb} version {m['version']} ({m['row_count']} rows, {outcome.seconds:.2f}s)")
    click.echo(f"  {outcome.result.uri}")
    _exit_if_untrainable(name, partition, m["version"], outcome.checks)


def _exit_if_untrainable(name: str, partition: str, version: str, checks: dict[str, Any]) -> None:
    """Exit 1 when the snapshot failed a blocking check: published as evidence, not trainable."""
    failed = sorted(n for n, c in checks.items() if c.get("blocking") and not c.get("passed"))
    if failed:
        click.echo(f"{name}/{partition} version {version} failed blocking checks {', '.join(failed)}: "
                   "it stays published as evidence, but it is not trainable", err=True)
        sys.exit(1)


@main.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List snapshots, or the partitions and versions of snapshot NAME."""
    store = _store(ctx)
    _check_name(store, name)
    unreadable: list[str] = []  # manifests that cannot be believed: named on stderr, exit 1
    if name is None:
        rows = []
        for asset in store.assets():
            parts = store.partitions(asset)
            n_versions = 0
            for p in parts:
                found, bad = store.scan(asset, p)
                n_versions += len(found)
                unreadable.extend(bad)
            rows.append({"asset": asset, "partitions": len(parts), "versions": n_versions,
                         "latest_partition": parts[-1] if parts else None})
        if as_json:
            _emit(rows)
        else:
            if not rows:
                click.echo(f"no snapshots in {store}")
            for r in rows:
                click.echo(f"{r['asset']}: {r['partitions']} partitions, {r['versions']} versions, "
                           f"latest partition {r['latest_partition']}")
        _exit_if_unreadable(unreadable)
        return
    rows = []
    for p in store.partitions(name):
        found, bad = store.scan(name, p)
        unreadable.extend(bad)
        for m in found:
            rows.append({"partition": p, "version": m["version"], "created_at": m["created_at"],
                         "row_count": m["row_count"], "dagster_run_id": m.get("dagster_run_id")})
    if as_json:
        _emit(rows)
        _exit_if_unreadable(unreadable)
        return
    if not rows:
        click.echo(f"no published versions of {name} in {store}")
    for r in rows:
        click.echo(f"{name}/{r['partition']}  {r['version']}  {r['row_count']:>10} rows  {r['created_at']}")
    _exit_if_unreadable(unreadable)


def _exit_if_unreadable(problems: list[str]) -> None:
    """Name every manifest that cannot be believed (on stderr) and exit 1; the rest was listed."""
    for problem in problems:
        click.echo(f"unreadable manifest, skipped: {problem}", err=True)
    if problems:
        sys.exit(1)


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
    """Check that every version (of NAME, or of all snapshots) proves itself; exit 1 on any problem.

    Re-hashes every file, recomputes the version id from the files, compares Parquet row counts with
    the manifest, reports unlisted files, a manifest outside its own folder or unreadable (named,
    the other versions are still verified), and a recorded blocking check the rows contradict
    (key_unique, not_null, min_rows are re-derived). Also reports each version's recorded check
    outcomes."""
    store = _store(ctx)
    _check_name(store, name)
    assets = [name] if name else store.assets()
    results = []
    for asset in assets:
        for p in store.partitions(asset):
            manifests, unreadable = store.scan(asset, p)
            for problem in unreadable:  # named, and every other version is still verified
                results.append({"asset": asset, "partition": p, "version": None, "ok": False,
                                "problems": [problem], "failed_blocking_checks": [], "check_warnings": []})
            for m in manifests:
                try:
                    problems = store.verify_version(m)
                except (OSError, ValueError) as exc:  # storage unreachable mid-way: report, go on
                    problems = [f"{store.file_uri(m, '')}: cannot be read: {type(exc).__name__}: {exc}"]
                failed_checks = blocking_failures(m)
                warned = sorted(n for n, c in (m.get("checks") or {}).items() if not c["passed"] and not c.get("blocking"))
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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _duration(_ctx: Any, param: Any, value: str) -> Any:
    import datetime as dt
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value or "")
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration such as 90m, 24h or 7d", param=param)
    return dt.timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])


@main.command()
@click.option("--older-than", default="24h", show_default=True, callback=_duration,
              help="Remove staging folders idle for longer than this (s, m, h, d); "
                   "make it longer than your longest snapshot.")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def gc(ctx: click.Context, older_than: Any, dry_run: bool, as_json: bool) -> None:
    """Remove what crashed writers left in the staging area; never a published version.

    Also lists version folders that have parts but no manifest (a writer died while publishing):
    readers never see them and the next snapshot of the same content completes them, so they are
    reported, not removed."""
    from snapshot_platform.store.gc import collect_garbage

    store = _store(ctx)
    found = collect_garbage(store, older_than, dry_run=dry_run)
    stale = [f for f in found if f.stale]
    if as_json:
        _emit({"dry_run": dry_run, "older_than_s": older_than.total_seconds(),
               "leftovers": [f.as_dict() for f in found],
               "removed": sum(f.removed for f in found),
               "removed_bytes": sum(f.bytes for f in found if f.removed)})
        return
    for f in found:
        age = "?" if f.age_s is None else f"{f.age_s / 3600:.1f}h"
        if f.removed:
            action = "removed"
        elif f.stale:
            action = "would remove"
        elif f.kind == "staging":
            action = "kept (young: a writer may be at work)"
        else:
            action = "kept (no manifest: invisible; the next publish of this content completes it)"
        click.echo(f"{action:<12} {f.kind:<18} {age:>8} {f.files:>4} files {f.bytes:>14,} B  {f.uri}")
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{len(found)} leftovers; {verb} {len(stale)} staging folders "
               f"({sum(f.bytes for f in stale):,} bytes) idle for more than {older_than}")


# ---------------------------------------------------------------- training: reproduce, compare, diff


class _CannotProceed(click.ClickException):
    """Exit status 2: the command could not do its job (a run, lock or version is missing or corrupt)."""

    exit_code = 2


def _tracking(tracking_uri: str | None) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from snapshot_platform.training.mlflow_logging import MlflowTracking

    return MlflowTracking(tracking_uri)


def _fail(as_json: bool, message: str, **fields: Any) -> None:
    if as_json:
        _emit({**fields, "error": message})
    raise _CannotProceed(message)


_tracking_option = click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
    help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<platform home>/mlflow.db).",
)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _echo_shifts(d: dict[str, Any], indent: str) -> None:
    shifts = []
    for col, c in (d.get("columns") or {}).items():
        s = c.get("shift") or {}
        if s.get("mean"):
            shifts.append(f"{col} mean {_fmt(c['a']['mean'])} → {_fmt(c['b']['mean'])} ({s['mean']:+.4g})")
        if s.get("null_fraction"):
            shifts.append(f"{col} nulls {s['null_fraction']:+.2%}")
    if shifts:
        click.echo(f"{indent}shifts: " + "; ".join(shifts))


def _echo_diff(d: dict[str, Any], indent: str = "  ") -> None:
    where = f"{d['asset']}/{d['partition']}"
    va, vb = d.get("version_a") or "(absent)", d.get("version_b") or "(absent)"
    if d.get("error"):
        click.echo(f"{indent}{where}  {va} → {vb}  cannot diff: {d['error']}")
        return
    if d.get("same_version"):
        click.echo(f"{indent}{where}  {va}  same version, {d['rows_a']} rows")
        return
    click.echo(f"{indent}{where}  {va} → {vb}  rows {d['rows_a']} → {d['rows_b']}: "
               f"added {d['rows_added']}, removed {d['rows_removed']}, changed {d['rows_changed']}")
    if d.get("changed_by_column"):
        click.echo(f"{indent}    changed columns: " + ", ".join(f"{k} {n}" for k, n in d["changed_by_column"].items()))
    for sc in d.get("schema_changes") or []:
        click.echo(f"{indent}    schema: {sc['column']} {sc['change']} ({sc['type_a'] or '-'} → {sc['type_b'] or '-'})")
    _echo_shifts(d, indent + "    ")


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_tracking_option
@click.option("--allow-failed-checks-reason", default=None,
              help="Retrain even on versions that failed a blocking check (the run's own recorded reason wins).")
@click.pass_context
def reproduce(ctx: click.Context, run_id: str, as_json: bool, tracking_uri: str | None,
              allow_failed_checks_reason: str | None) -> None:
    """Retrain MLflow run RUN_ID from its snapshot lock and compare metrics.

    Loads exactly the versions the run recorded (hash-verified, even when newer ones exist), retrains
    with the run's logged spec and seed, and compares every metric and the test predictions. Exit 0
    when identical, 1 when they differ, 2 when the run or its data cannot be had.
    """
    from snapshot_platform.training.lock import LockError
    from snapshot_platform.training.mlflow_logging import RunNotFound
    from snapshot_platform.training.reproduce import CannotReproduce, reproduce_run

    try:
        report = reproduce_run(run_id, _tracking(tracking_uri), _store(ctx), allow_failed_checks_reason)
    except (CannotReproduce, RunNotFound, LockError) as exc:
        _fail(as_json, f"cannot reproduce run {run_id}: {exc}", run_id=run_id, identical=False)
        return
    if as_json:
        _emit(report)
    else:
        click.echo(f"run {run_id}: model {report['model']} partition {report['model_partition']}")
        for s in report["snapshots"]:
            click.echo(f"  data     {s['asset']}/{s['partition']} version {s['version']} ({s['rows']} rows), "
                       "hash-verified against the lock")
        click.echo(f"  {'metric':<12} {'recorded':<22} {'reproduced':<22}")
        for k, m in report["metrics"].items():
            mark = "identical" if m["identical"] else "DIFFERS"
            click.echo(f"  {k:<12} {m['recorded']!r:<22} {m['reproduced']!r:<22} {mark}")
        p = report["predictions"]
        click.echo(f"  predictions  {'identical' if p['identical'] else 'DIFFER'} (sha256 {str(p['reproduced'])[:16]})")
        cv = report["code_version"]
        click.echo(f"  code version {cv['current']}" + (" (same)" if cv["same"] else f" (the run had {cv['recorded']})"))
        if report["library_differences"]:
            click.echo("  libraries    " + ", ".join(f"{k} {v['recorded']} → {v['current']}"
                                                      for k, v in report["library_differences"].items()))
        if report["identical"]:
            click.echo("REPRODUCED: identical metrics and predictions")
        else:
            bad = [k for k, m in report["metrics"].items() if not m["identical"]]
            if not p["identical"]:
                bad.append("predictions")
            click.echo(f"NOT REPRODUCED: {', '.join(bad)} differ", err=True)
    if not report["identical"]:
        sys.exit(1)


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@_tracking_option
@click.option("--batch-rows", default=65_536, show_default=True, type=click.IntRange(1),
              help="Rows per streamed batch in the data diffs.")
@click.pass_context
def compare(ctx: click.Context, run_a: str, run_b: str, as_json: bool, tracking_uri: str | None,
            batch_rows: int) -> None:
    """Compare two MLflow training runs: did the model improve, or did the data change?

    Metric deltas (b − a), model spec changes, and for each snapshot partition either run trained on
    a keyed data diff of the two versions: rows added, removed, changed, schema changes, and the shift
    of each column's summary statistics.
    """
    from snapshot_platform.training.compare import compare_runs
    from snapshot_platform.training.lock import LockError
    from snapshot_platform.training.mlflow_logging import RunNotFound

    try:
        report = compare_runs(run_a, run_b, _tracking(tracking_uri), _store(ctx), batch_rows=batch_rows)
    except (RunNotFound, LockError) as exc:
        _fail(as_json, f"cannot compare: {exc}", run_a=run_a, run_b=run_b)
        return
    if as_json:
        _emit(report)
        return
    click.echo(f"a = run {run_a} ({report['model_a']})")
    click.echo(f"b = run {run_b} ({report['model_b']})")
    click.echo(f"metrics        {'a':<12} {'b':<12} {'b − a':<12}")
    for k, m in report["metrics"].items():
        better = {"a": "a better", "b": "b better", "same": "same"}.get(m["better"] or "", "")
        delta = f"{m['delta']:+.6g}" if m["delta"] is not None else "-"
        click.echo(f"  {k:<12} {_fmt(m['a']):<12} {_fmt(m['b']):<12} {delta:<12} {better}")
    click.echo("data (every snapshot partition either run trained on)")
    for d in report["data"]:
        _echo_diff(d, "  ")
    if report["spec_changes"]:
        click.echo("model spec changes")
        for c in report["spec_changes"]:
            click.echo(f"  {c['field']}: {c['a']!r} → {c['b']!r}")
    else:
        cv = report["code_version"]
        click.echo("model spec: unchanged" + ("" if cv["same"] else f" (code version {cv['a']} → {cv['b']})"))
    click.echo(f"verdict: {report['verdict']['text']}")


@main.command(name="diff")
@click.argument("name")
@click.argument("partition")
@click.option("--from", "version_from", required=True, help="The older version id.")
@click.option("--to", "version_to", default=None, help="The newer version id (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@click.option("--batch-rows", default=65_536, show_default=True, type=click.IntRange(1),
              help="Rows per streamed batch (memory stays bounded by about two batches per side).")
@click.pass_context
def diff_(ctx: click.Context, name: str, partition: str, version_from: str, version_to: str | None,
          as_json: bool, batch_rows: int) -> None:
    """Diff two versions of snapshot NAME partition PARTITION, keyed on the catalog key, streamed."""
    from snapshot_platform.training.diff import DiffError, diff_versions

    store = _store(ctx)
    try:
        a = store.read_manifest(name, partition, version_from)
        b = store.read_manifest(name, partition, version_to)
        d = diff_versions(store, a, b, batch_rows=batch_rows)
    except (SnapshotNotFound, ManifestError, DiffError, ValueError) as exc:
        _fail(as_json, str(exc), asset=name, partition=partition)
        return
    except IntegrityError as exc:
        _fail(as_json, f"corrupt snapshot: {exc}", asset=name, partition=partition)
        return
    if as_json:
        _emit(d)
        return
    _echo_diff(d, "")
    if d.get("method") and not d.get("same_version"):
        click.echo(f"    ({d['method']}, key {', '.join(d['key'])})")


@main.command()
@click.option("--apply", "apply_", is_flag=True,
              help="Write the limits into the Dagster instance at $DAGSTER_HOME (else only print them).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pools(ctx: click.Context, apply_: bool, as_json: bool) -> None:
    """Each source's max_concurrent_queries as the limit of its Dagster pool (source_<name>)."""
    from snapshot_platform.source_resources import apply_pool_limits, pool_limits

    try:
        catalog = load_catalog(ctx.obj["catalog"])
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    limits = pool_limits(catalog)
    changed: dict[str, int] = {}
    if apply_:
        from dagster import DagsterInstance

        if not os.environ.get("DAGSTER_HOME"):
            raise click.ClickException("DAGSTER_HOME is not set: there is no instance to write the limits into")
        with DagsterInstance.get() as instance:
            changed = apply_pool_limits(instance, catalog)
    if as_json:
        _emit({"pools": limits, "changed": changed, "applied": apply_})
        return
    for pool, limit in limits.items():
        note = " (set)" if pool in changed else (" (already)" if apply_ else "")
        click.echo(f"{pool}: {limit}{note}")
    if not apply_:
        click.echo("apply with: snapshot-platform pools --apply   (or: dagster instance concurrency set POOL N)")


@main.command()
@click.option("--fresh", is_flag=True, help="Start over with a new source database (published snapshots stay).")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary.")
def demo(fresh: bool, as_json: bool) -> None:
    """Run the demo end to end on embedded defaults (SQLite source, local storage, local Dagster home)."""
    from snapshot_platform.demo.run import run_demo

    summary = run_demo(fresh=fresh, as_json=as_json)
    if as_json:
        _emit(summary)


if __name__ == "__main__":
    main()
