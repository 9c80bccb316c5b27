"""Drift between snapshot partitions: is a column's distribution in a new version like the trailing ones?

Per column, one figure, the population stability index (PSI)::

    PSI = sum over bins of (new_share - reference_share) * ln(new_share / reference_share)

- numeric columns (integers, floats, decimals, dates and timestamps as numbers): 10 bins fixed by the
  reference data's deciles (``numpy.quantile``, linear interpolation; equal edges merged), bin i
  holding ``edges[i-1] < x <= edges[i]``, the outer bins open-ended;
- categorical columns (strings, booleans, dictionaries): one bin per category (at most
  ``MAX_CATEGORIES``), so the figure is the PSI of the category shares, which are recorded too;
- NULL is a bin of its own wherever either side has one; a share of 0 counts as ``EPSILON``
  (the usual convention, so that a bin empty on one side gives a large but finite figure).

The reference is the latest version of each of the trailing partitions (the ``trailing`` partitions
before the new one, as the volume check chooses them), or one chosen partition. Everything is
computed streaming over verified batches: the reference in two passes (the deciles from a
systematic sample of at most ``SAMPLE_CAP`` values: every k-th row, k from the recorded row counts,
so exact for smaller references; then the bin counts), the new version in the check's single pass.
Pure: no Dagster, no database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.store import Manifest, SnapshotStore

BINS = 10
SAMPLE_CAP = 200_000
EPSILON = 1e-4
MAX_CATEGORIES = 1_000
STATISTIC = "psi"
NULL_BIN = "(null)"


class DriftError(ValueError):
    """The comparison cannot be made as asked (no such partition, nothing to compare with)."""


def column_kind(t: pa.DataType) -> str | None:
    """``numeric``, ``categorical``, or None when drift does not apply to the type."""
    if pa.types.is_dictionary(t):
        return column_kind(t.value_type) and "categorical"
    if pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return "categorical"
    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            or pa.types.is_temporal(t)):
        return "numeric"
    return None


def _floats(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column's non-null values as float64 (dates and times as their integer value)."""
    col = pc.drop_null(col)
    t = col.type
    if pa.types.is_temporal(t):
        col = col.cast(pa.int64()) if t.bit_width == 64 else col.cast(pa.int32())
    return np.asarray(col.cast(pa.float64()), dtype=np.float64)


def _categories(col: pa.Array | pa.ChunkedArray) -> dict[Any, int]:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    counts: dict[Any, int] = {}
    for entry in pc.value_counts(pc.drop_null(col)).to_pylist():
        counts[entry["values"]] = counts.get(entry["values"], 0) + int(entry["counts"])
    return counts


def psi(reference: Sequence[float], new: Sequence[float]) -> float:
    """PSI of two share vectors over the same bins (shares below EPSILON count as EPSILON)."""
    total = 0.0
    for e, a in zip(reference, new):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def _shares(counts: Sequence[int]) -> list[float]:
    n = sum(counts)
    return [c / n if n else 0.0 for c in counts]


@dataclass
class ColumnReference:
    kind: str
    edges: list[float] = field(default_factory=list)  # numeric: inner bin edges, ascending
    counts: list[int] = field(default_factory=list)  # numeric: per bin (len(edges) + 1)
    categories: dict[Any, int] = field(default_factory=dict)  # categorical: value -> count
    nulls: int = 0
    rows: int = 0
    problem: str | None = None


@dataclass
class DriftReference:
    """What a new version is compared with: the reference partitions and each column's bins."""

    partitions: list[str]
    columns: dict[str, ColumnReference]


def trailing_manifests(store: SnapshotStore, name: str, partition: str, trailing: int) -> list[Manifest]:
    """The latest versions of the ``trailing`` partitions before ``partition`` that have one, oldest first."""
    out: list[Manifest] = []
    for p in reversed([p for p in store.partitions(name) if p < partition]):
        versions = store.versions(name, p)
        if versions:
            out.append(versions[-1])
        if len(out) >= trailing:
            break
    return list(reversed(out))


def build_reference(store: SnapshotStore, manifests: Sequence[Manifest], columns: Sequence[str]) -> DriftReference:
    """Bins and counts of ``columns`` over ``manifests`` (hash-verified reads, two streaming passes)."""
    refs: dict[str, ColumnReference] = {}
    types: dict[str, pa.DataType] = {}
    for c in columns:
        missing = [m.partition for m in manifests if c not in {s.name for s in m.schema}]
        if missing:
            refs[c] = ColumnReference(kind="unknown", problem=f"column not in the reference partitions {missing}")
    wanted = [c for c in columns if c not in refs]
    if not manifests or not wanted:
        for c in wanted:
            refs[c] = ColumnReference(kind="unknown")
        return DriftReference([m.partition for m in manifests], refs)
    total = sum(m.row_count for m in manifests)
    stride = max(1, math.ceil(total / SAMPLE_CAP))
    samples: dict[str, list[np.ndarray]] = {c: [] for c in wanted}
    offset = 0
    # pass 1: kinds, categorical counts, null counts, a systematic sample of the numeric values
    for m in manifests:
        for batch in store.iter_batches(m, columns=wanted):
            n = batch.num_rows
            take = np.arange((-offset) % stride, n, stride)
            for c in wanted:
                col = batch.column(c)
                if c not in types:
                    types[c] = col.type
                    kind = column_kind(col.type)
                    refs[c] = ColumnReference(kind=kind or "unsupported",
                                              problem=None if kind else f"drift does not apply to type {col.type}")
                ref = refs[c]
                if ref.problem:
                    continue
                ref.rows += n
                ref.nulls += col.null_count
                if ref.kind == "categorical":
                    for v, k in _categories(col).items():
                        ref.categories[v] = ref.categories.get(v, 0) + k
                    if len(ref.categories) > MAX_CATEGORIES:
                        ref.problem = f"more than {MAX_CATEGORIES} categories: too many for a share comparison"
                        ref.categories = {}
                else:
                    samples[c].append(_floats(col.take(pa.array(take))))
            offset += n
    # pass 2: numeric bin counts over the fixed edges
    numeric = [c for c in wanted if c in types and refs[c].kind == "numeric" and not refs[c].problem]
    for c in numeric:
        values = np.concatenate(samples[c]) if samples[c] else np.zeros(0)
        if len(values):
            qs = np.quantile(values, [i / BINS for i in range(1, BINS)])
            refs[c].edges = [float(e) for e in np.unique(qs)]
        refs[c].counts = [0] * (len(refs[c].edges) + 1)
    if numeric:
        for m in manifests:
            for batch in store.iter_batches(m, columns=numeric):
                for c in numeric:
                    _count_into(refs[c], batch.column(c))
    for c in wanted:
        refs.setdefault(c, ColumnReference(kind="unknown"))
    return DriftReference([m.partition for m in manifests], refs)


def _count_into(ref: ColumnReference, col: pa.Array) -> None:
    idx = np.searchsorted(np.asarray(ref.edges, dtype=np.float64), _floats(col), side="left")
    for i, k in zip(*np.unique(idx, return_counts=True)):
        ref.counts[int(i)] += int(k)


class DriftAccumulator:
    """The new version's side, fed batch by batch (in the checks' single pass)."""

    def __init__(self, reference: DriftReference, columns: Sequence[str]):
        self.reference = reference
        self.columns = list(columns)
        for c in self.columns:  # no reference partitions: nothing to compare with
            reference.columns.setdefault(c, ColumnReference(kind="unknown"))
        self.new = {c: ColumnReference(kind=reference.columns[c].kind, edges=reference.columns[c].edges,
                                       counts=[0] * len(reference.columns[c].counts))
                    for c in self.columns}
        self.problems: dict[str, str] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for c in self.columns:
            ref, new = self.reference.columns[c], self.new[c]
            if ref.problem or c in self.problems or ref.kind not in ("numeric", "categorical"):
                continue
            if c not in batch.schema.names:
                self.problems[c] = "column not in the new version"
                continue
            col = batch.column(c)
            if column_kind(col.type) != ref.kind:
                self.problems[c] = f"the column is {col.type} here, {ref.kind} in the reference"
                continue
            new.rows += batch.num_rows
            new.nulls += col.null_count
            if ref.kind == "numeric":
                _count_into(new, col)
            else:
                for v, k in _categories(col).items():
                    new.categories[v] = new.categories.get(v, 0) + k

    def outcome(self, threshold: float) -> tuple[bool, dict[str, Any]]:
        """(passed, details): one entry per column with its figure and whether it crossed ``threshold``."""
        per_column: dict[str, Any] = {}
        crossed_any = False
        for c in self.columns:
            ref, new = self.reference.columns[c], self.new[c]
            problem = ref.problem or self.problems.get(c)
            if problem:
                per_column[c] = {"kind": ref.kind, "figure": None, "crossed": True, "problem": problem}
                crossed_any = True
                continue
            if ref.rows == 0 or new.rows == 0:
                per_column[c] = {"kind": ref.kind, "figure": None, "crossed": False,
                                 "note": "no rows to compare" if ref.rows else "no reference rows"}
                continue
            entry = _compare(ref, new)
            entry["crossed"] = entry["figure"] > threshold
            crossed_any = crossed_any or entry["crossed"]
            per_column[c] = entry
        details = {"statistic": STATISTIC, "threshold": threshold, "compared_with": list(self.reference.partitions),
                   "columns": per_column, "crossed": [c for c, e in per_column.items() if e["crossed"]]}
        return not crossed_any, details


def _compare(ref: ColumnReference, new: ColumnReference) -> dict[str, Any]:
    with_nulls = bool(ref.nulls or new.nulls)
    if ref.kind == "numeric":
        ref_counts, new_counts = list(ref.counts), list(new.counts)
        labels = None
    else:
        labels = sorted(set(ref.categories) | set(new.categories), key=lambda v: (str(type(v)), v))
        ref_counts = [ref.categories.get(v, 0) for v in labels]
        new_counts = [new.categories.get(v, 0) for v in labels]
    if with_nulls:
        ref_counts.append(ref.nulls)
        new_counts.append(new.nulls)
    e, a = _shares(ref_counts), _shares(new_counts)
    entry: dict[str, Any] = {"kind": ref.kind, "figure": psi(e, a), "rows": new.rows, "reference_rows": ref.rows}
    if ref.kind == "numeric":
        entry["edges"] = ref.edges
        entry["shares"] = [round(x, 6) for x in a]
        entry["reference_shares"] = [round(x, 6) for x in e]
    else:
        names = [str(v) for v in labels] + ([NULL_BIN] if with_nulls else [])
        moved = sorted(zip(names, e, a), key=lambda t: -abs(t[2] - t[1]))[:20]
        entry["shares"] = {n: {"reference": round(x, 6), "new": round(y, 6)} for n, x, y in moved}
    return entry


def figures(details: Mapping[str, Any] | None) -> dict[str, float]:
    """Column -> figure from a drift check's details (columns without one left out): for the UI."""
    cols = (details or {}).get("columns") or {}
    return {c: float(e["figure"]) for c, e in cols.items() if isinstance(e, Mapping) and e.get("figure") is not None}


def compare(store: SnapshotStore, manifest: Manifest, reference: Sequence[Manifest], columns: Sequence[str],
            threshold: float) -> tuple[bool, dict[str, Any]]:
    """Drift of ``manifest`` against ``reference`` (both read hash-verified), as the check computes it."""
    ref = build_reference(store, reference, columns)
    acc = DriftAccumulator(ref, columns)
    present = [c for c in columns if c in {s.name for s in manifest.schema}]
    for batch in store.iter_batches(manifest, columns=present):
        acc.add(batch)
    for c in columns:
        if c not in present:
            acc.problems[c] = "column not in the new version"
    return acc.outcome(threshold)


def run_on(batches: Iterable[pa.RecordBatch], reference: DriftReference, columns: Sequence[str],
           threshold: float) -> tuple[bool, dict[str, Any]]:
    acc = DriftAccumulator(reference, columns)
    for b in batches:
        acc.add(b)
    return acc.outcome(threshold)
