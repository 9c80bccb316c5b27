"""``snapshot-platform report NAME``: one self-contained HTML page about a snapshot.

What it shows: the row count of every published version of every partition over time, the null
fraction and value range of each column (of each partition's latest version), the outcome of every
check per partition (a failed blocking check marked), and which MLflow runs trained on which versions.

The data comes from the store's verified readers: manifests through :meth:`SnapshotStore.scan`, rows
streamed batch by batch through :meth:`SnapshotStore.iter_batches` (memory stays at about one batch;
a version that does not prove itself is named on the page as unverified). Runs come from MLflow: a
training run's dataset inputs carry the version id as their digest (training/mlflow_logging.py).

The figures are drawn by matplotlib (Agg) and embedded as base64 PNG, so the page needs no network;
its only links are to the MLflow UI (``$SNAPSHOT_PLATFORM_MLFLOW_UI_URL``, or an http(s) tracking URI).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.gate import blocking_failures
from snapshot_platform.store import IntegrityError, Manifest, SnapshotStore


@dataclass
class ColumnSummary:
    """One column of one version: rows, nulls, and the smallest and largest value (when ordered)."""

    name: str
    type: str
    rows: int = 0
    nulls: int = 0
    min: Any = None
    max: Any = None

    @property
    def null_fraction(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    def add(self, values: pa.Array) -> None:
        self.rows += len(values)
        self.nulls += values.null_count
        if not _ordered(values.type) or values.null_count == len(values):
            return
        mm = pc.min_max(values)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        self.min = lo if self.min is None or (lo is not None and lo < self.min) else self.min
        self.max = hi if self.max is None or (hi is not None and hi > self.max) else self.max


def _ordered(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t))


@dataclass
class PartitionReport:
    partition: str
    versions: list[Manifest]
    unreadable: list[str]
    columns: list[ColumnSummary] = field(default_factory=list)
    problem: str | None = None
    """Why the latest version's rows could not be summarised (it did not verify)."""

    @property
    def latest(self) -> Manifest:
        return self.versions[-1]


@dataclass(frozen=True)
class RunUse:
    """An MLflow run that trained on versions of this snapshot."""

    run_id: str
    model: str
    started: str
    versions: tuple[tuple[str, str], ...]  # (partition, version)
    url: str | None


@dataclass
class SnapshotReport:
    name: str
    storage: str
    partitions: list[PartitionReport]
    runs: list[RunUse]
    runs_note: str | None
    generated_at: str

    @property
    def problems(self) -> list[str]:
        return [f"{p.partition}: {p.problem}" for p in self.partitions if p.problem]


# ---------------------------------------------------------------- collecting


def summarise(store: SnapshotStore, manifest: Manifest) -> list[ColumnSummary]:
    """Per-column nulls and ranges of one version, streamed from the verified reader."""
    cols = [ColumnSummary(c.name, c.type) for c in manifest.schema]
    for batch in store.iter_batches(manifest):
        for summary in cols:
            summary.add(batch.column(batch.schema.get_field_index(summary.name)))
    return cols


MLFLOW_UI_ENV = "SNAPSHOT_PLATFORM_MLFLOW_UI_URL"


def mlflow_ui(tracking_uri: str) -> str | None:
    """The MLflow UI's base URL, as the Dagster metadata links it (orchestration/metadata.py, which
    imports Dagster, so it is not imported here): ``$SNAPSHOT_PLATFORM_MLFLOW_UI_URL``, else an
    http(s) tracking URI itself; None otherwise."""
    ui = os.environ.get(MLFLOW_UI_ENV) or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    return ui.rstrip("/") if ui else None


def model_runs(tracking_uri: str | None, name: str, versions: set[str]) -> tuple[list[RunUse], str | None]:
    """The runs whose dataset inputs are versions of ``name``; and a note when MLflow could not be read."""
    from snapshot_platform.training.mlflow_logging import EXPERIMENT_PREFIX, MlflowTracking

    tracking = MlflowTracking(tracking_uri) if tracking_uri else None
    uri = tracking.tracking_uri if tracking else None
    if uri is None:
        from snapshot_platform.training.mlflow_logging import default_tracking_uri

        uri = default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return [], f"no MLflow store at {uri}: no training runs to show"
    try:
        client = MlflowTracking(uri).client()
        experiments = client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")
        found = client.search_runs([e.experiment_id for e in experiments], max_results=5000,
                                   order_by=["attributes.start_time ASC"]) if experiments else []
    except Exception as exc:  # an unreachable server: the page says so, the rest of it stands
        return [], f"MLflow at {uri} could not be read: {type(exc).__name__}"
    ui = mlflow_ui(uri)
    runs = []
    for run in found:
        used = []
        for di in run.inputs.dataset_inputs if run.inputs else ():
            tags = {t.key: t.value for t in di.tags}
            if di.dataset.digest in versions and tags.get("snapshot.asset", name) == name:
                used.append((tags.get("snapshot.partition", di.dataset.name), di.dataset.digest))
        if not used:
            continue
        started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc).isoformat(timespec="seconds")
        url = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" if ui else None
        runs.append(RunUse(run.info.run_id, run.data.tags.get("snapshot_platform.model", "?"), started,
                           tuple(sorted(used)), url))
    return runs, None


def collect(store: SnapshotStore, name: str, tracking_uri: str | None = None, with_runs: bool = True) -> SnapshotReport:
    parts = []
    for p in store.partitions(name):
        found, unreadable = store.scan(name, p)
        if not found:
            continue
        report = PartitionReport(p, found, unreadable)
        try:
            report.columns = summarise(store, report.latest)
        except IntegrityError as exc:
            report.problem = f"version {report.latest.version} did not verify: {exc}"
        parts.append(report)
    versions = {m.version for p in parts for m in p.versions}
    runs, note = model_runs(tracking_uri, name, versions) if with_runs else ([], "MLflow not asked (--no-runs)")
    return SnapshotReport(name, store.uri(store.root), parts, runs, note,
                          dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


# ---------------------------------------------------------------- figures


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _when(iso: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def rows_figure(report: SnapshotReport) -> str:
    """Left: each partition's latest row count; right: every version's row count by publish time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    names = [p.partition for p in report.partitions]
    colors = ["tab:red" if blocking_failures(p.latest) or p.problem else "tab:blue" for p in report.partitions]
    left.bar(range(len(names)), [p.latest.row_count for p in report.partitions], color=colors)
    left.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    left.set_title("Rows per partition (latest version; red: failed a blocking check)", fontsize=9)
    left.set_ylabel("rows")
    for p in report.partitions:
        right.plot([_when(m.created_at) for m in p.versions], [m.row_count for m in p.versions],
                   marker="o", label=p.partition)
    right.set_title("Rows of every version, by publish time (UTC)", fontsize=9)
    locator = mdates.AutoDateLocator()
    right.xaxis.set_major_locator(locator)
    right.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    right.tick_params(axis="x", labelsize=8)
    if len(report.partitions) <= 12:
        right.legend(fontsize=7)
    return _png(fig)


def nulls_figure(report: SnapshotReport) -> str | None:
    """A heat map: partitions x columns, the null fraction of each column of the latest version."""
    parts = [p for p in report.partitions if p.columns]
    if not parts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c.name for c in parts[-1].columns]
    grid = [[next((c.null_fraction for c in p.columns if c.name == col), float("nan")) for col in cols]
            for p in parts]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cols) + 2), max(2.2, 0.35 * len(parts) + 1.2)))
    im = ax.imshow(grid, aspect="auto", cmap="Reds", vmin=0, vmax=max(0.05, max(max(r) for r in grid)))
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(parts)), [p.partition for p in parts], fontsize=8)
    ax.set_title("Null fraction per column (latest version of each partition)", fontsize=9)
    fig.colorbar(im, ax=ax)
    return _png(fig)


# ---------------------------------------------------------------- the page

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left} th{background:#f3f3f3}
.failed{background:#fdd;color:#900;font-weight:bold} .passed{color:#060} .warn{background:#ffe9c4}
code{font-size:12px} img{max-width:100%}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in ((c for c in r) for r in rows))
    return f'<table class="{cls}"><tr>{h}</tr>{body}</table>'


def _td(v: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(v)}</td>' if cls else f"<td>{_e(v)}</td>"


def render(report: SnapshotReport) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Snapshot {_e(report.name)}</title>"
           f"<style>{_STYLE}</style></head><body>",
           f"<h1>Snapshot <code>{_e(report.name)}</code></h1>",
           f"<p>Storage {_e(report.storage)}; {len(report.partitions)} partitions; generated {_e(report.generated_at)}.</p>"]
    for problem in report.problems:
        out.append(f'<p class="failed">Not verified: {_e(problem)}</p>')

    out.append("<h2>Partitions and versions</h2>")
    out.append(f'<img alt="rows per partition and version" src="{rows_figure(report)}">')
    rows = []
    for p in report.partitions:
        failed = blocking_failures(p.latest)
        for i, m in enumerate(p.versions):
            latest = i == len(p.versions) - 1
            mark = "failed" if latest and failed else ""
            rows.append([_td(p.partition), _td(m.version, mark), _td(m.created_at), _td(m.row_count),
                         _td("latest" if latest else ""),
                         _td(", ".join(blocking_failures(m)) or "-", "failed" if blocking_failures(m) else "")])
        if p.unreadable:
            rows.append([_td(p.partition), _td("unreadable: " + ", ".join(p.unreadable), "failed"),
                         _td(""), _td(""), _td(""), _td("")])
    out.append(_table(["partition", "version", "published", "rows", "", "failed blocking checks"], rows,
                      "versions"))

    out.append("<h2>Checks per partition (latest version)</h2>")
    names = sorted({n for p in report.partitions for n in (p.latest.checks or {})})
    rows = []
    for p in report.partitions:
        checks = p.latest.checks or {}
        cells = [_td(p.partition), _td(p.latest.version)]
        for n in names:
            c = checks.get(n)
            if c is None:
                cells.append(_td("-"))
            elif c.passed:
                cells.append(_td("passed", "passed"))
            else:
                cells.append(_td("FAILED" if c.blocking else "warn", "failed" if c.blocking else "warn"))
        rows.append(cells)
    out.append(_table(["partition", "version", *names], rows, "checks"))

    out.append("<h2>Columns: null fractions and value ranges (latest version)</h2>")
    nulls = nulls_figure(report)
    if nulls:
        out.append(f'<img alt="null fraction per column" src="{nulls}">')
    rows = []
    for p in report.partitions:
        for c in p.columns:
            rows.append([_td(p.partition), _td(c.name), _td(c.type), _td(f"{c.null_fraction:.3f}"),
                         _td(c.min), _td(c.max)])
    out.append(_table(["partition", "column", "type", "null fraction", "min", "max"], rows, "columns"))

    out.append("<h2>Model runs that used these versions</h2>")
    if report.runs_note:
        out.append(f"<p>{_e(report.runs_note)}</p>")
    rows = []
    for r in report.runs:
        run = f'<td><a href="{_e(r.url)}">{_e(r.run_id)}</a></td>' if r.url else _td(r.run_id)
        rows.append([run, _td(r.model), _td(r.started),
                     _td("; ".join(f"{p} {v}" for p, v in r.versions))])
    out.append(_table(["MLflow run", "model", "started", "versions (partition version)"], rows, "runs"))
    out.append("</body></html>")
    return "\n".join(out)
