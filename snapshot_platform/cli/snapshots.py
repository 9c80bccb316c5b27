"""The snapshot commands: snapshot, list, show, verify, gc, diff (rendering in ``render.py``)."""

from __future__ import annotations

import datetime as dt
import gc as _gc
import signal
import sys
from typing import Any, Mapping

import click

from snapshot_platform.catalog import CatalogError
from snapshot_platform.cli import progress, render
from snapshot_platform.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    NoData,
    UsageProblem,
    catalog_of,
    check_name,
    fail,
    require_snapshot,
    store_of,
    tracking,
    tracking_option,
    unknown_snapshot,
)
from snapshot_platform.gate import blocking_failures
from snapshot_platform.secrets import SecretMissingError
from snapshot_platform.sources.base import SourceError
from snapshot_platform.store import CheckOutcome, IntegrityError, ManifestError, SnapshotNotFound


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: it takes Ctrl-C's clean path (a KeyboardInterrupt, so no
    ``except Exception`` swallows it, and the store waits for its reader thread as for Ctrl-C)."""


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


@click.command()
@click.argument("name")
@click.argument("partition")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--allow-open-window", is_flag=True,
              help="Snapshot a partition whose window has not closed yet (its rows may still change).")
@click.option("--accept-late", is_flag=True,
              help="mode: as_of: publish a read taken more than max_lag after the partition's end "
                   "(today's state, marked late: true) instead of refusing it.")
@click.pass_context
def snapshot(ctx: click.Context, name: str, partition: str, as_json: bool, allow_open_window: bool,
             accept_late: bool) -> None:
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
        from snapshot_platform.capture import take_snapshot
        from snapshot_platform.catalog.windows import PartitionKeyError, window_for
        from snapshot_platform.sources import make_source

        catalog = catalog_of(ctx)
        if name not in catalog.snapshots:  # exit 2, naming the catalog's snapshots
            raise unknown_snapshot(name, sorted(catalog.snapshots), catalog, None)
        spec = catalog.snapshots[name]
        try:
            window = window_for(spec.partitions, partition, allow_open=allow_open_window)
        except PartitionKeyError as exc:
            raise click.UsageError(str(exc), ctx) from None
        source = make_source(spec.source, catalog.sources[spec.source])
        # what is loaded by now lives until the process ends: out of the cyclic collector's scans
        # while the rows stream (~2% of a 6M-row snapshot's time)
        _gc.freeze()
        with progress.rows_progress(f"{name}/{partition}", as_json) as shown:
            outcome = take_snapshot(spec, source, window, store_of(ctx), name=name, partition_key=partition,
                                    progress=shown, accept_late=accept_late)
    except (CatalogError, ValueError, SourceError, SecretMissingError, StorageWriteError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    except _Terminated:
        click.echo(f"snapshot-platform: {name}/{partition} terminated (SIGTERM); nothing published", err=True)
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        click.echo(f"snapshot-platform: {name}/{partition} interrupted (Ctrl-C); nothing published", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)
    m = outcome.result.manifest
    if as_json:
        render.emit({"created": outcome.result.created, "seconds": outcome.seconds, "manifest": m.as_dict()})
    else:
        render.published(name, partition, outcome.result.created, m, outcome.seconds, outcome.result.uri)
    _exit_if_untrainable(name, partition, m.version, outcome.checks)


def _exit_if_untrainable(name: str, partition: str, version: str, checks: Mapping[str, CheckOutcome]) -> None:
    """Exit 1 when the snapshot failed a blocking check: published as evidence, not trainable."""
    failed = sorted(n for n, c in checks.items() if c.blocking and not c.passed)
    if failed:
        render.untrainable(name, partition, version, failed)
        sys.exit(EXIT_FAILED)


@click.command(name="list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List snapshots, or the partitions and versions of snapshot NAME."""
    store = store_of(ctx)
    if name is not None:
        require_snapshot(ctx, store, name)  # exit 2 for an unknown name, listing the known ones
    unreadable: list[str] = []  # manifests that cannot be believed: named on stderr, exit 1
    rows: list[dict[str, Any]] = []
    if name is None:
        for asset in store.assets():
            parts = store.partitions(asset)
            n_versions = 0
            for p in parts:
                found, bad = store.scan(asset, p)
                n_versions += len(found)
                unreadable.extend(bad)
            rows.append({"asset": asset, "partitions": len(parts), "versions": n_versions,
                         "latest_partition": parts[-1] if parts else None})
    else:
        for p in store.partitions(name):
            found, bad = store.scan(name, p)
            unreadable.extend(bad)
            for m in found:
                rows.append({"partition": p, "version": m.version, "created_at": m.created_at,
                             "row_count": m.row_count, "dagster_run_id": m.dagster_run_id})
    if as_json:
        render.emit(rows)
    elif name is None:
        render.asset_list(rows, store)
    else:
        render.version_list(name, rows, store)
    render.unreadable(unreadable)
    if unreadable:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("name")
@click.argument("partition")
@click.option("--version", "version", default=None, help="A version id (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.pass_context
def show(ctx: click.Context, name: str, partition: str, version: str | None, as_json: bool) -> None:
    """Show the manifest of one snapshot version."""
    store = store_of(ctx)
    require_snapshot(ctx, store, name, partition)  # exit 2: unknown snapshot, malformed partition key
    try:
        m = store.read_manifest(name, partition, version)
    except (SnapshotNotFound, ManifestError) as exc:  # exit 1: the data says no
        raise NoData(str(exc)) from None
    except ValueError as exc:  # a --version that cannot be a path component
        raise UsageProblem(str(exc)) from None
    if as_json:
        render.emit(m.as_dict())
    else:
        render.manifest(m)


@click.command()
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
    store = store_of(ctx)
    if name is not None:
        require_snapshot(ctx, store, name)  # exit 2 for an unknown name, listing the known ones
    assets = [name] if name else store.assets()
    results = []
    # every manifest first: the bar's totals (versions, bytes) come from them
    scanned = [(asset, p, *store.scan(asset, p)) for asset in assets for p in store.partitions(asset)]
    total_bytes = sum(f.bytes for _, _, found, _ in scanned for m in found for f in m.files)
    total_versions = sum(len(found) for _, _, found, _ in scanned)
    hashed: dict[str, tuple[str, int]] = {}  # a part shared by several versions is hashed once
    with progress.bytes_bar("verify", total_bytes, total_versions, as_json) as advance:
        for asset, p, manifests, unreadable in scanned:
            for problem in unreadable:  # named, and every other version is still verified
                results.append({"asset": asset, "partition": p, "version": None, "ok": False,
                                "problems": [problem], "failed_blocking_checks": [], "check_warnings": []})
            for m in manifests:
                try:
                    problems = store.verify_version(m, progress=lambda nbytes: advance(0, nbytes), hashed=hashed)
                except (OSError, ValueError) as exc:  # storage unreachable mid-way: report, go on
                    problems = [f"{store.file_uri(m, '')}: cannot be read: {type(exc).__name__}: {exc}"]
                failed_checks = blocking_failures(m)
                warned = sorted(n for n, c in (m.checks or {}).items() if not c.passed and not c.blocking)
                ok = not problems and not (fail_on_checks and failed_checks)
                results.append({"asset": asset, "partition": p, "version": m.version,
                                "ok": ok, "problems": problems, "failed_blocking_checks": failed_checks,
                                "check_warnings": warned})
                advance(1, 0)  # the bytes were told part by part, as each was hashed
    bad = [r for r in results if not r["ok"]]
    if as_json:
        render.emit({"ok": not bad, "checked": len(results), "results": results})
    else:
        render.verify_results(results, len(bad))
    if name and not results:
        click.echo(f"no published versions of {name} in {store}", err=True)
        sys.exit(EXIT_FAILED)
    if bad:
        sys.exit(EXIT_FAILED)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_ZERO = dt.timedelta(0)  # --grace 0: no grace period


def _duration(_ctx: Any, param: Any, value: str) -> Any:
    import datetime as dt
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value or "")
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration such as 90m, 24h or 7d", param=param)
    return dt.timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])


@click.command()
@click.option("--older-than", default="24h", show_default=True, callback=_duration,
              help="Remove staging folders idle for longer than this (s, m, h, d); "
                   "make it longer than your longest snapshot.")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--keep-last", type=click.IntRange(min=1), default=None,
              help="Retention: delete published versions beyond the last N of each partition (see below).")
@click.option("--keep-within", default=None, callback=lambda c, p, v: None if v is None else _duration(c, p, v),
              help="Retention: also keep versions created within this (s, m, h, d).")
@click.option("--grace", default="1h", show_default=True,
              callback=lambda c, p, v: _duration(c, p, v) if v.strip() not in ("0", "0s") else _ZERO,
              help="Retention: never delete a version created or recorded again within this.")
@tracking_option
@click.pass_context
def gc(ctx: click.Context, older_than: Any, dry_run: bool, as_json: bool, keep_last: int | None,
       keep_within: Any, grace: Any, tracking_uri: str | None) -> None:
    """Remove what crashed writers left in the staging area (and their publish intents, then the
    shared parts no manifest references, older than --older-than); never a published version.

    Also lists version folders that have parts but no manifest (a writer died while publishing):
    readers never see them and the next snapshot of the same content completes them, so they are
    reported, not removed.

    With --keep-last N (retention): delete the published versions no rule keeps. Kept: the last N
    of each partition, those created within --keep-within, and always the latest version of a
    partition, every version in the snapshot lock of any MLflow run (--tracking-uri) or behind a
    registered model version, and every version created or recorded again within --grace. A
    version's manifest goes first, then its parts (store/retention.py)."""
    if keep_within is not None and keep_last is None:
        raise click.UsageError("--keep-within is a retention rule: give --keep-last too", ctx)
    if keep_last is not None:
        _retention(ctx, keep_last, keep_within, grace, dry_run, as_json, tracking_uri)
        return
    from snapshot_platform.store.gc import collect_garbage

    found = collect_garbage(store_of(ctx), older_than, dry_run=dry_run)
    if as_json:
        render.emit({"dry_run": dry_run, "older_than_s": older_than.total_seconds(),
                     "leftovers": [f.as_dict() for f in found],
                     "removed": sum(f.removed for f in found),
                     "removed_bytes": sum(f.bytes for f in found if f.removed)})
        return
    render.gc_report(found, dry_run, older_than)


def _retention(ctx: click.Context, keep_last: int, keep_within: Any, grace: Any, dry_run: bool, as_json: bool,
               tracking_uri: str | None) -> None:
    from snapshot_platform.store.retention import apply_retention, pinned_versions

    pinned = pinned_versions(tracking(tracking_uri))
    done = apply_retention(store_of(ctx), keep_last, keep_within, pinned, dry_run=dry_run, grace=grace)
    gone = [i for i in done.items if i.deleted or dry_run]
    freed = done.bytes_freed  # a shared part is freed once no manifest references it (store/retention.py)
    if as_json:
        render.emit({"dry_run": dry_run, "deleted": [i.as_dict() for i in gone], "bytes_freed": 0 if dry_run else freed,
                     "parts_deleted": 0 if dry_run else len(done.sweep.parts),
                     **({"would_free": freed} if dry_run else {}),
                     **({"parts_not_swept": done.sweep.skipped} if done.sweep.skipped else {})})
        if done.sweep.skipped:
            sys.exit(EXIT_FAILED)
        return
    verb = "would delete" if dry_run else "deleted"
    for i in gone:
        click.echo(f"{verb} {i.asset}/{i.partition} version {i.version} (created {i.created_at}, {i.bytes:,} bytes)")
    click.echo(f"{verb} {render.plural(len(gone), 'version')}, {freed:,} bytes "
               f"{'would be ' if dry_run else ''}freed ({render.plural(len(done.sweep.parts), 'shared part')} "
               f"no version references any more; {len(pinned)} pinned by MLflow runs)")
    if done.sweep.skipped:
        click.echo(f"shared parts not swept: {done.sweep.skipped}", err=True)
        sys.exit(EXIT_FAILED)


@click.command(name="diff")
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
    from snapshot_platform.store.diff import DiffError, diff_versions

    store = store_of(ctx)
    try:
        require_snapshot(ctx, store, name, partition)
    except UsageProblem as exc:  # exit 2: unknown snapshot, malformed partition key
        fail(as_json, exc.message, asset=name, partition=partition)
        return
    try:
        a = store.read_manifest(name, partition, version_from)
        b = store.read_manifest(name, partition, version_to)
        with progress.rows_bar(f"diff {name}/{partition}", a.row_count + b.row_count, as_json) as advance:
            d = diff_versions(store, a, b, batch_rows=batch_rows, progress=advance)
    except (SnapshotNotFound, ManifestError) as exc:  # exit 1, as in show: the data says no
        fail(as_json, str(exc), error_class=NoData, asset=name, partition=partition)
        return
    except (DiffError, ValueError) as exc:
        fail(as_json, str(exc), asset=name, partition=partition)
        return
    except IntegrityError as exc:  # exit 1: an integrity failure
        fail(as_json, f"corrupt snapshot: {exc}", error_class=NoData, asset=name, partition=partition)
        return
    if as_json:
        render.emit(d)
        return
    render.diff(d, "")
    render.diff_method(d)


COMMANDS = (snapshot, list_, show, verify, gc, diff_)
