"""A version proves itself: what its manifest says is re-derived from the stored bytes.

Used by every reader (``SnapshotStore.iter_batches``, ``read_table``, ``verify_version``), so
``snapshot-platform verify``, the Dagster IO manager and the training loader hold a version to the
same rules (docs/storage.md, "A version proves itself"):

- the manifest's ``asset``, ``partition`` and ``version`` name the folder it sits in;
- the version id equals the digest of the parts' Arrow schema (read from the hash-verified footers)
  and their sha256 (``manifest.version_id``, exactly what publish computes);
- every part's Parquet row count equals its ``files[].rows``, and their sum ``row_count``;
- the folder holds no file the manifest does not list;
- the recorded outcome of every blocking check agrees with the rows: ``key_unique``, ``not_null`` and
  ``min_rows`` are re-computed from the rows while they are read (streaming, the key and not-null
  columns only); the history-dependent checks (``schema_unchanged``, ``volume``) and column rules
  are held to their own recorded details (a check recorded as passed whose details count offending
  rows is a contradiction), since the history they compared with is not part of the version.

Plain library: no Dagster, no catalog.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.store.manifest import CheckOutcome, Manifest

# checks whose outcome follows from the rows alone; always blocking (checks.check_defs)
ROW_CHECKS = ("key_unique", "not_null", "min_rows")


def adjacent_duplicates(prev_key: pa.RecordBatch | None, keys: pa.RecordBatch) -> tuple[int, list[int]]:
    """Rows of ``keys`` equal (and not NULL) to the row before them, ``prev_key`` being the last
    row of the previous batch. The snapshot is sorted by its key, so duplicates are neighbours.

    Returns the count and the indexes (into ``prev_key`` + ``keys``) of the duplicate rows."""
    both = pa.Table.from_batches([prev_key, keys]) if prev_key is not None else pa.Table.from_batches([keys])
    if both.num_rows < 2:
        return 0, []
    same = None
    for k in keys.schema.names:
        col = both.column(k)
        eq = pc.and_kleene(pc.equal(col.slice(1), col.slice(0, both.num_rows - 1)),
                           pc.invert(pc.is_null(col.slice(1))))
        eq = pc.and_kleene(eq, pc.is_valid(eq))  # NULL -> false (fill_null(eq, False) would convert
        # a Python scalar, which makes pyarrow import pandas: 0.25 s of a snapshot process)
        same = eq if same is None else pc.and_(same, eq)
    dups = pc.sum(same).as_py() or 0
    if not dups:
        return 0, []
    return dups, [i + 1 for i in pc.indices_nonzero(same).to_pylist()]


class RowChecks:
    """Re-derives ``key_unique``, ``not_null`` and ``min_rows`` from the rows, one batch at a time."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.recorded: Mapping[str, CheckOutcome] | None = manifest.checks
        checks = self.recorded or {}
        self.schema_names = [c.name for c in manifest.schema]
        self.key = [k for k in (manifest.key or []) if isinstance(k, str)]
        nn = _details(checks.get("not_null"))
        cols = nn.get("columns")
        if not isinstance(cols, list):  # recorded before the column list was: the offending ones
            cols = list((nn.get("null_rows") or {}).keys())
        self.not_null = [c for c in cols if isinstance(c, str)]
        mr = _details(checks.get("min_rows"))
        self.min_rows = mr.get("min_rows") if isinstance(mr.get("min_rows"), int) else None
        self.rows = 0
        self.dups = 0
        self.nulls = {c: 0 for c in self.not_null}
        self._prev: pa.RecordBatch | None = None
        self._key_ok = bool(self.key) and all(k in self.schema_names for k in self.key)

    def columns(self) -> list[str]:
        """The columns the derivation reads (those present in the schema)."""
        wanted = (self.key if self._key_ok else []) + self.not_null
        return [c for c in dict.fromkeys(wanted) if c in self.schema_names]

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if not n:
            return
        self.rows += n
        if self._key_ok:
            keys = pa.RecordBatch.from_arrays([batch.column(k) for k in self.key], names=self.key)
            dups, _ = adjacent_duplicates(self._prev, keys)
            self.dups += dups
            self._prev = keys.slice(n - 1, 1)
        for c in self.not_null:
            if c in batch.schema.names:
                self.nulls[c] += batch.column(c).null_count

    def contradictions(self, where: str) -> list[str]:
        """Every disagreement between the recorded check outcomes and the rows (empty: they agree)."""
        rec = self.recorded
        out: list[str] = []

        def recorded(name: str) -> CheckOutcome | None:
            return (rec or {}).get(name)

        def disagree(name: str, derived_passed: bool, why: str) -> None:
            c = recorded(name)
            if c is None:
                # an outcome left out is harmless while the rows pass; left out where they fail, it
                # would let a refused version train
                if not derived_passed:
                    out.append(f"{where}: the manifest records no outcome of blocking check {name}, "
                               f"but the rows fail it: {why}")
                return
            if bool(c.passed) != derived_passed:
                said = "passed" if c.passed else "failed"
                out.append(f"{where}: blocking check {name} is recorded as {said}, but the rows say {why}")
            if name in ROW_CHECKS and c.blocking is not True:
                out.append(f"{where}: check {name} is always blocking; the manifest records it as not blocking")

        if self.key:
            missing = [k for k in self.key if k not in self.schema_names]
            if missing:
                disagree("key_unique", False, f"key column(s) {', '.join(missing)} are missing")
            else:
                disagree("key_unique", self.dups == 0,
                         f"{self.dups} rows repeat a key ({', '.join(self.key)})" if self.dups
                         else f"the key ({', '.join(self.key)}) is unique")
                c = recorded("key_unique")
                d = _details(c)
                if c is not None and isinstance(d.get("duplicate_rows"), int) and d["duplicate_rows"] != self.dups:
                    out.append(f"{where}: key_unique records {d['duplicate_rows']} duplicate rows; "
                               f"the rows have {self.dups}")
        if self.not_null:
            missing = [c for c in self.not_null if c not in self.schema_names]
            offending = {c: n for c, n in self.nulls.items() if n}
            why = (f"columns {', '.join(missing)} are missing" if missing else
                   f"NULLs in {', '.join(f'{c} ({n} rows)' for c, n in offending.items())}" if offending else
                   f"no NULLs in {', '.join(self.not_null)}")
            disagree("not_null", not offending and not missing, why)
        if self.min_rows is not None:
            disagree("min_rows", self.rows >= self.min_rows,
                     f"{self.rows} rows (at least {self.min_rows} required)")
        elif rec is not None and recorded("min_rows") is None:
            disagree("min_rows", True, f"{self.rows} rows")
        for name, c in (rec or {}).items():
            out.extend(_self_consistency(where, name, c, self.rows, self.schema_names))
        return out


def _details(c: CheckOutcome | None) -> Mapping[str, Any]:
    """A recorded outcome's details; empty when there is no outcome or its details are not an object."""
    d = c.details if c is not None else None
    return d if isinstance(d, dict) else {}


def _self_consistency(where: str, name: str, c: CheckOutcome, rows: int, names: list[str]) -> list[str]:
    """A recorded check whose outcome contradicts its own recorded details, or the rows' count."""
    out = []
    d = _details(c)
    passed = bool(c.passed)
    blocking = c.blocking
    if (c.severity == "ERROR") != bool(blocking):
        out.append(f"{where}: check {name} has severity {c.severity!r} but blocking={blocking!r}")
    if name == "schema_unchanged" and any(k in d for k in ("added", "removed", "type_changed")):
        changed = bool(d.get("added") or d.get("removed") or d.get("type_changed"))
        if passed == changed:
            out.append(f"{where}: schema_unchanged is recorded as {'passed' if passed else 'failed'}, "
                       f"but its details list {'changes' if changed else 'no change'}")
        strays = [a for a in (d.get("added") or []) if a not in names]
        strays += [r for r in (d.get("removed") or []) if r in names]
        if strays:
            out.append(f"{where}: schema_unchanged's details disagree with the version's columns: {strays}")
    if name in ("volume", "min_rows") and isinstance(d.get("row_count"), int) and d["row_count"] != rows:
        out.append(f"{where}: check {name} records {d['row_count']} rows; the version has {rows}")
    if name == "volume" and isinstance(d.get("deviation"), (int, float)) and isinstance(d.get("tolerance"), (int, float)):
        if passed != (d["deviation"] <= d["tolerance"]):
            out.append(f"{where}: volume is recorded as {'passed' if passed else 'failed'}, but its deviation "
                       f"{d['deviation']} against tolerance {d['tolerance']} says otherwise")
    if name.startswith("column_rules_") and passed:
        counts = {k: d.get(k) for k in ("rows_not_accepted", "rows_below_min", "rows_above_max")}
        bad = {k: v for k, v in counts.items() if isinstance(v, int) and v}
        if bad or d.get("problem"):
            out.append(f"{where}: {name} is recorded as passed, but its details report {bad or d.get('problem')}")
    return out
