"""The text (and JSON) the commands print: manifests, listings, verify / gc / diff / reproduce /
compare reports. No decisions and no exit codes here; the commands make those."""

from __future__ import annotations

import json
from typing import Any

import click

from snapshot_platform.gate import blocking_failures
from snapshot_platform.report import Report
from snapshot_platform.store import Manifest
from snapshot_platform.store.diff_report import DataDiff
from snapshot_platform.training.reports import CompareReport, PartitionDiff, ReproduceReport


def emit(obj: Any) -> None:
    """``--json`` output: indented, anything not JSON-native as its text (a report writes its own)."""
    click.echo(obj.to_json() if isinstance(obj, Report) else json.dumps(obj, indent=2, default=str))


def plural(n: int, noun: str) -> str:
    """``1 version``, ``2 versions``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration(td: Any) -> str:
    """A timedelta as the ``--older-than`` form it came from: ``24h``, ``90m``, ``7d``, ``30s``."""
    seconds = td.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ---------------------------------------------------------------- snapshots


def published(name: str, partition: str, created: bool, manifest: Manifest, seconds: float, uri: str) -> None:
    verb = "published" if created else "unchanged, already published as"
    click.echo(f"{name}/{partition}: {verb} version {manifest.version} "
               f"({manifest.row_count} rows, {seconds:.2f}s)")
    click.echo(f"  {uri}")


def untrainable(name: str, partition: str, version: str, failed: list[str]) -> None:
    click.echo(f"{name}/{partition} version {version} failed blocking checks {', '.join(failed)}: "
               "it stays published as evidence, but it is not trainable", err=True)


def unreadable(problems: list[str]) -> None:
    for problem in problems:
        click.echo(f"unreadable manifest, skipped: {problem}", err=True)


def asset_list(rows: list[dict[str, Any]], store: Any) -> None:
    if not rows:
        click.echo(f"no snapshots in {store}")
    for r in rows:
        click.echo(f"{r['asset']}: {r['partitions']} partitions, {r['versions']} versions, "
                   f"latest partition {r['latest_partition']}")


def version_list(name: str, rows: list[dict[str, Any]], store: Any) -> None:
    if not rows:
        click.echo(f"no published versions of {name} in {store}")
    for r in rows:
        click.echo(f"{name}/{r['partition']}  {r['version']}  {r['row_count']:>10} rows  {r['created_at']}")


def manifest(m: Manifest) -> None:
    """``show``: one version's manifest, its checks, and whether it is trainable."""
    click.echo(f"{m.where}")
    click.echo(f"  created     {m.created_at}  (dagster run {m.dagster_run_id})")
    click.echo(f"  window      [{m.window['start']}, {m.window['end']})")
    click.echo(f"  rows        {m.row_count}")
    src = m.source
    where = ", ".join(f"{k} {src[k]}" for k in ("host", "database") if src.get(k) is not None)
    click.echo(f"  source      {src.get('name')} ({', '.join(filter(None, [src.get('kind'), where]))})")
    click.echo(f"  state       {json.dumps(m.source_state, default=str)}")
    click.echo(f"  code        {m.code_version}  query sha256 {m.query_sha256[:16]}")
    click.echo("  schema")
    for c in m.schema:
        click.echo(f"    {c.name:<28} {c.type}")
    click.echo("  files")
    for f in m.files:
        click.echo(f"    {f.path}  {f.rows} rows  {f.bytes} bytes  sha256 {f.sha256}")
    click.echo("  checks")
    if not m.checks:
        click.echo("    (none recorded)")
    for check_name, c in (m.checks or {}).items():
        status = "passed" if c.passed else ("FAILED" if c.blocking else "warning")
        kind = "blocking" if c.blocking else "warn"
        details = c.details if "details" in c.as_dict() else {}
        click.echo(f"    {check_name:<28} {status:<8} ({kind})  {json.dumps(details, default=str)}")
    failed = blocking_failures(m)
    if failed:
        click.echo(f"  NOT TRAINABLE: failed blocking checks {', '.join(failed)}")


def verify_results(results: list[dict[str, Any]], failed: int) -> None:
    for r in results:
        status = "ok" if r["ok"] else "FAILED"
        click.echo(f"{status:<6} {r['asset']}/{r['partition']}/{r['version']}")
        for pr in r["problems"]:
            click.echo(f"       {pr}")
        if r["failed_blocking_checks"]:
            click.echo(f"       blocking checks failed (not trainable): {', '.join(r['failed_blocking_checks'])}")
        if r["check_warnings"]:
            click.echo(f"       check warnings: {', '.join(r['check_warnings'])}")
    click.echo(f"{plural(len(results), 'version')} checked, {failed} failed")


def gc_report(found: list[Any], dry_run: bool, older_than: Any) -> None:
    stale = [f for f in found if f.stale]
    for f in found:
        age = "?" if f.age_s is None else f"{f.age_s / 3600:.1f}h"
        if f.removed:
            action = "removed"
        elif f.stale:
            action = "would remove"
        elif f.kind in ("staging", "intent"):
            action = "kept (young: a writer may be at work)"
        else:
            action = "kept (no manifest: invisible; the next publish of this content completes it)"
        click.echo(f"{action:<12} {f.kind:<18} {age:>8} {f.files:>4} files {f.bytes:>14,} B  {f.uri}")
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{plural(len(found), 'leftover')}; {verb} {plural(len(stale), 'leftover')} "
               f"({sum(f.bytes for f in stale):,} bytes) idle for more than {duration(older_than)}")


def pool_limits(limits: dict[str, int], changed: dict[str, int], applied: bool) -> None:
    for pool, limit in limits.items():
        note = " (set)" if pool in changed else (" (already)" if applied else "")
        click.echo(f"{pool}: {limit}{note}")
    if not applied:
        click.echo("apply with: snapshot-platform pools --apply   (or: dagster instance concurrency set POOL N)")


# ---------------------------------------------------------------- diffs


def _shifts(d: DataDiff, indent: str) -> None:
    shifts = []
    for col, c in d.columns.items():
        s = c.shift
        if s.get("mean"):
            shifts.append(f"{col} mean {fmt(c.a['mean'])} → {fmt(c.b['mean'])} ({s['mean']:+.4g})")
        if s.get("null_fraction"):
            shifts.append(f"{col} nulls {s['null_fraction']:+.2%}")
    if shifts:
        click.echo(f"{indent}shifts: " + "; ".join(shifts))


def diff(d: DataDiff | PartitionDiff, indent: str = "  ") -> None:
    """One partition's data diff (``diff``, and each partition of ``compare``)."""
    where = f"{d.asset}/{d.partition}"
    va, vb = d.version_a or "(absent)", d.version_b or "(absent)"
    if isinstance(d, PartitionDiff):
        if d.diff is None:
            click.echo(f"{indent}{where}  {va} → {vb}  cannot diff: {d.error}")
            return
        d = d.diff
    if d.same_version:
        click.echo(f"{indent}{where}  {va}  same version, {d.rows_a} rows")
        return
    click.echo(f"{indent}{where}  {va} → {vb}  rows {d.rows_a} → {d.rows_b}: "
               f"added {d.rows_added}, removed {d.rows_removed}, changed {d.rows_changed}")
    if d.changed_by_column:
        click.echo(f"{indent}    changed columns: "
                   + ", ".join(f"{k} {n}" for k, n in d.changed_by_column.items()))
    for sc in d.schema_changes:
        click.echo(f"{indent}    schema: {sc.column} {sc.change} ({sc.type_a or '-'} → {sc.type_b or '-'})")
    _shifts(d, indent + "    ")


def diff_method(d: DataDiff) -> None:
    if d.method and not d.same_version:
        click.echo(f"    ({d.method}, key {', '.join(d.key)})")


# ---------------------------------------------------------------- training runs


def reproduction(run_id: str, report: ReproduceReport) -> None:
    click.echo(f"run {run_id}: model {report.model} partition {report.model_partition}")
    for s in report.snapshots:
        click.echo(f"  data     {s.asset}/{s.partition} version {s.version} ({s.rows} rows), "
                   "hash-verified against the lock")
    click.echo(f"  {'metric':<12} {'recorded':<22} {'reproduced':<22}")
    for k, m in report.metrics.items():
        mark = "identical" if m.identical else "DIFFERS"
        click.echo(f"  {k:<12} {m.recorded!r:<22} {m.reproduced!r:<22} {mark}")
    p = report.predictions
    click.echo(f"  predictions  {'identical' if p.identical else 'DIFFER'} (sha256 {str(p.reproduced)[:16]})")
    cv = report.code_version
    click.echo(f"  code version {cv.current}" + (" (same)" if cv.same else f" (the run had {cv.recorded})"))
    if report.library_differences:
        click.echo("  libraries    " + ", ".join(f"{k} {v.recorded} → {v.current}"
                                                  for k, v in report.library_differences.items()))
    if report.identical:
        click.echo("REPRODUCED: identical metrics and predictions")
    else:
        click.echo(f"NOT REPRODUCED: {', '.join(report.differing)} differ", err=True)


def comparison(run_a: str, run_b: str, report: CompareReport) -> None:
    click.echo(f"a = run {run_a} ({report.model_a})")
    click.echo(f"b = run {run_b} ({report.model_b})")
    click.echo(f"metrics        {'a':<12} {'b':<12} {'b − a':<12}")
    for k, m in report.metrics.items():
        better = {"a": "a better", "b": "b better", "same": "same"}.get(m.better or "", "")
        delta = f"{m.delta:+.6g}" if m.delta is not None else "-"
        click.echo(f"  {k:<12} {fmt(m.a):<12} {fmt(m.b):<12} {delta:<12} {better}")
    click.echo("data (every snapshot partition either run trained on)")
    for d in report.data:
        diff(d, "  ")
    if report.spec_changes:
        click.echo("model spec changes")
        for c in report.spec_changes:
            click.echo(f"  {c.field}: {c.a!r} → {c.b!r}")
    else:
        cv = report.code_version
        click.echo("model spec: unchanged" + ("" if cv.same else f" (code version {cv.a} → {cv.b})"))
    click.echo(f"verdict: {report.verdict.text}")
