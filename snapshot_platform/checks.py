"""Data integrity checks on one snapshot partition, computed streaming over its Parquet batches.

The checks run before a version's manifest is written, so their outcomes are recorded in it
(``checks``: name → :class:`~snapshot_platform.store.manifest.CheckOutcome`) and travel with the data.
No check loads a partition whole: key uniqueness compares each row with the previous one (a
snapshot is sorted by its key), the rest are counts. This module is pure: no Dagster, no database.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.catalog import ColumnRules, SnapshotSpec
from snapshot_platform.drift import DriftAccumulator, DriftReference
from snapshot_platform.store.integrity import adjacent_duplicates
from snapshot_platform.store.manifest import CheckOutcome, SchemaColumn

EXAMPLES = 5
DRIFT_CHECK = "drift"


@dataclass(frozen=True)
class CheckDef:
    name: str
    blocking: bool
    description: str


@dataclass
class History:
    """What the partition is compared with: the previous partition's schema, trailing row counts."""

    previous_partition: str | None = None
    previous_schema: Sequence[SchemaColumn] | None = None
    trailing_row_counts: list[int] = field(default_factory=list)
    drift: "DriftReference | None" = None  # the trailing partitions' bins, when the drift check is on


def _slug(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", column)


def column_check_name(column: str) -> str:
    return f"column_rules_{_slug(column)}"


def check_defs(spec: SnapshotSpec) -> list[CheckDef]:
    c = spec.checks
    defs = [
        CheckDef("key_unique", True, f"Key ({', '.join(spec.key)}) is unique"),
        CheckDef("min_rows", True, f"At least {c.min_rows} rows"),
        CheckDef("schema_unchanged", c.schema_change == "block",
                 "Columns and types equal the previous partition's latest version"),
        CheckDef("volume", c.volume.blocking,
                 f"Row count within {c.volume.tolerance:.0%} of the median of the trailing "
                 f"{c.volume.trailing} partitions"),
    ]
    if spec.not_null:
        defs.insert(1, CheckDef("not_null", True, f"No NULLs in {', '.join(spec.not_null)}"))
    for col, rules in c.columns.items():
        defs.append(CheckDef(column_check_name(col), rules.blocking, f"Rules on column {col}: {rules.describe()}"))
    if c.drift is not None:
        defs.append(CheckDef(DRIFT_CHECK, c.drift.blocking,
                             f"Distribution of {', '.join(c.drift.columns)} within PSI {c.drift.threshold:g} of the "
                             f"trailing {c.drift.trailing} partitions"))
    return defs


def _result(passed: bool, blocking: bool, details: dict[str, Any]) -> CheckOutcome:
    return CheckOutcome.of(passed, blocking, details)


def _key_repr(batch: pa.RecordBatch, key: list[str], rows: list[int]) -> list[Any]:
    out = []
    for i in rows[: EXAMPLES]:
        vals = [batch.column(k)[i].as_py() for k in key]
        out.append(vals[0] if len(vals) == 1 else vals)
    return out


class _Accumulator:
    """Everything the checks need, gathered in one pass over the batches."""

    def __init__(self, spec: SnapshotSpec):
        self.spec = spec
        self.rows = 0
        self.dup_count = 0
        self.dup_examples: list[Any] = []
        self.null_counts = {c: 0 for c in spec.not_null}
        self.null_examples: dict[str, list[Any]] = {c: [] for c in spec.not_null}
        self.prev_key: pa.RecordBatch | None = None
        self.col_state: dict[str, dict[str, Any]] = {
            c: {"nulls": 0, "rejected": 0, "below": 0, "above": 0, "examples": []} for c in spec.checks.columns
        }
        self.problems: dict[str, str] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n == 0:
            return
        key = self.spec.key
        self.rows += n
        # key uniqueness: the snapshot is ordered by its key, so duplicates are neighbours
        keys = pa.RecordBatch.from_arrays([batch.column(k) for k in key], names=key)
        dups, idx = adjacent_duplicates(self.prev_key, keys)
        if dups:
            self.dup_count += dups
            if len(self.dup_examples) < EXAMPLES:
                both = pa.Table.from_batches([self.prev_key, keys] if self.prev_key is not None else [keys])
                flat = both.combine_chunks().to_batches()[0]
                self.dup_examples.extend(_key_repr(flat, key, idx[:EXAMPLES]))
        self.prev_key = keys.slice(n - 1, 1)
        for c in self.spec.not_null:
            if c not in batch.schema.names:
                continue
            nulls = batch.column(c).null_count
            if nulls:
                self.null_counts[c] += nulls
                if len(self.null_examples[c]) < EXAMPLES:
                    idx = pc.indices_nonzero(pc.is_null(batch.column(c))).to_pylist()
                    self.null_examples[c].extend(_key_repr(batch, key, idx))
        for c, rules in self.spec.checks.columns.items():
            if c not in batch.schema.names or c in self.problems:
                continue
            self._column_rules(batch, c, rules)

    def _column_rules(self, batch: pa.RecordBatch, c: str, rules: ColumnRules) -> None:
        st = self.col_state[c]
        col = batch.column(c)
        st["nulls"] += col.null_count
        bad = None
        try:
            if rules.accepted_values is not None:
                allowed = pa.array(rules.accepted_values).cast(col.type)
                rejected = pc.fill_null(pc.invert(pc.is_in(col, value_set=allowed)), False)
                rejected = pc.and_(rejected, pc.is_valid(col))
                st["rejected"] += pc.sum(rejected).as_py() or 0
                bad = rejected
            if rules.min is not None or rules.max is not None:
                if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                        or pa.types.is_decimal(col.type)):
                    self.problems[c] = f"min/max need a numeric column; {c} is {col.type}"
                    return
                num = pc.cast(col, pa.float64())
                if rules.min is not None:
                    below = pc.fill_null(pc.less(num, rules.min), False)
                    st["below"] += pc.sum(below).as_py() or 0
                    bad = below if bad is None else pc.or_(bad, below)
                if rules.max is not None:
                    above = pc.fill_null(pc.greater(num, rules.max), False)
                    st["above"] += pc.sum(above).as_py() or 0
                    bad = above if bad is None else pc.or_(bad, above)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            self.problems[c] = f"rules do not apply to {c} ({col.type}): {exc}"
            return
        if bad is not None and len(st["examples"]) < EXAMPLES:
            idx = pc.indices_nonzero(bad).to_pylist()
            st["examples"].extend(_key_repr(batch, self.spec.key, idx))


def _schema_diff(before: Sequence[SchemaColumn], after: list[dict[str, Any]]) -> dict[str, Any]:
    b = {c.name: c.type for c in before}
    a = {c["name"]: c["type"] for c in after}
    return {
        "added": [n for n in a if n not in b],
        "removed": [n for n in b if n not in a],
        "type_changed": {n: {"from": b[n], "to": a[n]} for n in a if n in b and a[n] != b[n]},
    }


def run_checks(
    spec: SnapshotSpec,
    schema_json: list[dict[str, Any]],
    batches: Iterable[pa.RecordBatch],
    history: History,
) -> dict[str, CheckOutcome]:
    """Compute every check of ``spec`` over ``batches`` (the written snapshot, streamed).

    ``schema_json`` is the snapshot's schema as the manifest records it; ``batches`` need only the
    key, not-null and rule columns.
    """
    run = CheckRun(spec, schema_json, history)
    for b in batches:
        run.add(b)
    return run.outcomes()


class CheckRun:
    """The checks of one snapshot fed batch by batch, in the snapshot's row order (:meth:`add`), then
    evaluated (:meth:`outcomes`): what :func:`run_checks` does, for rows that pass by on their way to
    the writer (capture.py), so the written parts need not be decoded a second time."""

    def __init__(self, spec: SnapshotSpec, schema_json: list[dict[str, Any]], history: History):
        self.spec = spec
        self.schema_json = schema_json
        self.history = history
        self._acc = _Accumulator(spec)
        drift_spec = spec.checks.drift
        self._drift = (DriftAccumulator(history.drift or DriftReference([], {}), drift_spec.columns)
                       if drift_spec is not None else None)

    def add(self, batch: pa.RecordBatch) -> None:
        self._acc.add(batch)
        if self._drift is not None:
            self._drift.add(batch)

    def outcomes(self) -> dict[str, CheckOutcome]:
        return _outcomes(self.spec, self.schema_json, self.history, self._acc, self._drift)


def _outcomes(spec: SnapshotSpec, schema_json: list[dict[str, Any]], history: History, acc: _Accumulator,
              drift: DriftAccumulator | None) -> dict[str, CheckOutcome]:
    names = {c["name"] for c in schema_json}
    drift_spec = spec.checks.drift
    blocking = {d.name: d.blocking for d in check_defs(spec)}
    out: dict[str, CheckOutcome] = {}
    missing_key = [k for k in spec.key if k not in names]
    out["key_unique"] = _result(
        acc.dup_count == 0 and not missing_key, True,
        {"key": spec.key, "duplicate_rows": acc.dup_count, "examples": acc.dup_examples[:EXAMPLES],
         **({"missing_columns": missing_key} if missing_key else {})},
    )
    if spec.not_null:
        missing = [c for c in spec.not_null if c not in names]
        offending = {c: n for c, n in acc.null_counts.items() if n}
        out["not_null"] = _result(
            not offending and not missing, True,
            {"columns": list(spec.not_null), "null_rows": offending, "examples": {c: acc.null_examples[c][:EXAMPLES] for c in offending},
             **({"missing_columns": missing} if missing else {})},
        )
    out["min_rows"] = _result(acc.rows >= spec.checks.min_rows, True,
                              {"row_count": acc.rows, "min_rows": spec.checks.min_rows})
    if history.previous_schema is None:
        out["schema_unchanged"] = _result(True, blocking["schema_unchanged"],
                                          {"note": "no earlier partition to compare with"})
    else:
        diff = _schema_diff(history.previous_schema, schema_json)
        changed = bool(diff["added"] or diff["removed"] or diff["type_changed"])
        out["schema_unchanged"] = _result(not changed, blocking["schema_unchanged"],
                                          {"compared_with": history.previous_partition, **diff})
    v = spec.checks.volume
    trailing = history.trailing_row_counts[-v.trailing:]
    if len(trailing) < v.min_history:
        out["volume"] = _result(True, blocking["volume"], {
            "row_count": acc.rows, "note": f"{len(trailing)} earlier partitions; the check needs {v.min_history}"})
    else:
        median = statistics.median(trailing)
        deviation = abs(acc.rows - median) / median if median else (0.0 if acc.rows == 0 else float("inf"))
        out["volume"] = _result(deviation <= v.tolerance, blocking["volume"], {
            "row_count": acc.rows, "trailing_median": median, "trailing_partitions": len(trailing),
            "deviation": round(deviation, 4) if deviation != float("inf") else "inf", "tolerance": v.tolerance})
    for c, rules in spec.checks.columns.items():
        name = column_check_name(c)
        if c not in names:
            out[name] = _result(False, blocking[name], {"column": c, "problem": "column not in the snapshot"})
            continue
        if c in acc.problems:
            out[name] = _result(False, blocking[name], {"column": c, "problem": acc.problems[c]})
            continue
        st = acc.col_state[c]
        null_fraction = st["nulls"] / acc.rows if acc.rows else 0.0
        too_many_nulls = rules.max_null_fraction is not None and null_fraction > rules.max_null_fraction
        passed = not (st["rejected"] or st["below"] or st["above"] or too_many_nulls)
        out[name] = _result(passed, blocking[name], {
            "column": c, "rows_not_accepted": st["rejected"], "rows_below_min": st["below"],
            "rows_above_max": st["above"], "null_fraction": round(null_fraction, 6),
            "examples": st["examples"][:EXAMPLES],
        })
    if drift is not None:
        passed, details = drift.outcome(drift_spec.threshold)
        out[DRIFT_CHECK] = _result(passed, blocking[DRIFT_CHECK], details)
    return out
