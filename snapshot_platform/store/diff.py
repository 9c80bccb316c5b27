"""A keyed diff of two snapshot versions, streamed: rows added, removed, changed; schema; column shifts.

Both versions are sorted by the catalog key (the source orders every snapshot by it), so the diff
is a merge-join over the verified rows of both (``SnapshotStore.open_verified`` hashes every part
and recomputes the version id before the first row, and gives the schema from the verified
footers: nothing is read from a version that does not prove itself). Each side holds at most
about one batch beyond the current key bound, and rows are compared by a 64-bit hash per non-key column (the columns both
versions have), which also says which columns changed. Per-column summary statistics (rows, nulls,
mean, std, min, max) are accumulated batch by batch on each side.

The merge-join needs our comparison of keys to agree with the order the database produced. It
does for numbers and dates; for text it depends on the engine's collation, and NULL keys sort first
in one engine and last in another. So the order is checked as the batches stream; if it is not
strictly increasing by our comparison (or the two versions' key types cannot be compared), the
diff starts again with a hash-partitioned join instead: both sides are spilled to temporary Parquet
buckets by a hash of the canonical key and joined bucket by bucket. Memory stays bounded either way.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from snapshot_platform.store.diff_report import DataDiff, DiffSamples, SchemaChange
from snapshot_platform.store.diff_stats import TableStats, column_shifts, json_value, stat_kind
from snapshot_platform.store.keys import key_strings
from snapshot_platform.store.manifest import Manifest
from snapshot_platform.store.store import SnapshotStore

DEFAULT_BATCH_ROWS = 65_536
SAMPLE_KEYS = 5


class DiffError(ValueError):
    pass


# a side of the diff: its verified Arrow schema and its rows (None and nothing for an absent version)
_Opened = tuple[pa.Schema | None, Iterator[pa.RecordBatch]]


class _Unordered(Exception):
    """The merge-join cannot be used: keys out of our order, NULL keys, incomparable key types."""


# ---------------------------------------------------------------- schema


def _schema_map(manifest: Manifest | None) -> dict[str, str]:
    return {c.name: c.type for c in manifest.schema} if manifest else {}


def schema_changes(a: Manifest | None, b: Manifest | None) -> list[SchemaChange]:
    """Columns added, removed or retyped from version a to version b (nothing when a side is absent)."""
    if a is None or b is None:
        return []
    sa, sb = _schema_map(a), _schema_map(b)
    out: list[SchemaChange] = []
    for name, t in sa.items():
        if name not in sb:
            out.append(SchemaChange(column=name, change="removed", type_a=t, type_b=None))
        elif sb[name] != t:
            out.append(SchemaChange(column=name, change="type_changed", type_a=t, type_b=sb[name]))
    for name, t in sb.items():
        if name not in sa:
            out.append(SchemaChange(column=name, change="added", type_a=None, type_b=t))
    return out


# ---------------------------------------------------------------- row comparison


def _hash_cast(ta: pa.DataType, tb: pa.DataType) -> pa.DataType | None:
    """The type both sides are brought to before hashing a common column (None: as it is)."""
    num_a, num_b = stat_kind(ta) == "numeric", stat_kind(tb) == "numeric"
    if ta.equals(tb):
        return pa.string() if pa.types.is_decimal(ta) else None  # decimals hash exactly as text
    if num_a and num_b:
        return pa.float64()
    return pa.string()


def _hashes(arr: pa.Array, cast: pa.DataType | None) -> np.ndarray:
    if cast is not None:
        arr = arr.cast(cast)
    return pd.util.hash_pandas_object(arr.to_pandas(), index=False).to_numpy()


@dataclass
class _Plan:
    key: list[str]
    common: list[str]  # non-key columns in both versions, compared row by row
    casts_a: dict[str, pa.DataType | None]
    casts_b: dict[str, pa.DataType | None]


def _plan(key: list[str], schema_a: pa.Schema | None, schema_b: pa.Schema | None) -> _Plan:
    if schema_a is None or schema_b is None:
        return _Plan(key, [], {}, {})
    names_b = set(schema_b.names)
    common = [n for n in schema_a.names if n in names_b and n not in key]
    casts = {n: _hash_cast(schema_a.field(n).type, schema_b.field(n).type) for n in common}
    return _Plan(key, common, casts, casts)


def _prepare(batch: pa.RecordBatch, plan: _Plan, side: str) -> pd.DataFrame:
    casts = plan.casts_a if side == "a" else plan.casts_b
    data: dict[str, Any] = {k: batch.column(k).to_pandas() for k in plan.key}
    for i, name in enumerate(plan.common):
        data[f"__h{i}"] = _hashes(batch.column(name), casts[name])
    return pd.DataFrame(data)


@dataclass
class _Tally:
    plan: _Plan
    sample: int
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    by_column: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"added": [], "removed": [], "changed": []})

    def _keep(self, what: str, keys: pd.DataFrame) -> None:
        room = self.sample - len(self.samples[what])
        if room > 0 and len(keys):
            for row in keys.head(room).to_dict("records"):
                self.samples[what].append({k: json_value(v.item() if hasattr(v, "item") else v)
                                           for k, v in row.items()})

    def join(self, a: pd.DataFrame, b: pd.DataFrame, on: list[str]) -> None:
        """Tally one chunk: ``a`` and ``b`` hold every row of both sides within the same key range."""
        if not len(a) or not len(b):
            self.added += len(b)
            self.removed += len(a)
            self._keep("added", b[self.plan.key])
            self._keep("removed", a[self.plan.key])
            return
        left = a[on].assign(__ia=np.arange(len(a)))
        right = b[on].assign(__ib=np.arange(len(b)))
        try:
            m = left.merge(right, on=on, how="outer", indicator=True, sort=False)
        except (TypeError, ValueError) as exc:
            raise _Unordered(f"the key columns cannot be matched across versions: {exc}") from None
        ind = m["_merge"].to_numpy()
        only_b, only_a, both = ind == "right_only", ind == "left_only", ind == "both"
        self.added += int(only_b.sum())
        self.removed += int(only_a.sum())
        key_cols = self.plan.key
        self._keep("added", b.iloc[m.loc[only_b, "__ib"].astype(np.int64).to_numpy()][key_cols])
        self._keep("removed", a.iloc[m.loc[only_a, "__ia"].astype(np.int64).to_numpy()][key_cols])
        ia = m.loc[both, "__ia"].astype(np.int64).to_numpy()
        ib = m.loc[both, "__ib"].astype(np.int64).to_numpy()
        differs = np.zeros(len(ia), dtype=bool)
        for i, name in enumerate(self.plan.common):
            col = f"__h{i}"
            d = a[col].to_numpy()[ia] != b[col].to_numpy()[ib]
            n = int(d.sum())
            if n:
                self.by_column[name] = self.by_column.get(name, 0) + n
            differs |= d
        self.changed += int(differs.sum())
        self.unchanged += int((~differs).sum())
        self._keep("changed", a.iloc[ia[differs]][key_cols])


# ---------------------------------------------------------------- merge-join


def _lex(cols_x: list[np.ndarray], cols_y: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise lexicographic (x < y, x == y) over key columns."""
    n = len(cols_x[0]) if cols_x else 0
    lt = np.zeros(n, dtype=bool)
    eq = np.ones(n, dtype=bool)
    try:
        for x, y in zip(cols_x, cols_y):
            x_lt = np.asarray(x < y, dtype=bool)
            x_eq = np.asarray(x == y, dtype=bool)
            lt |= eq & x_lt
            eq &= x_eq
    except TypeError as exc:
        raise _Unordered(f"keys cannot be compared: {exc}") from None
    return lt, eq


class _Side:
    """One version's prepared batches, with its order checked as they arrive."""

    def __init__(self, batches: Iterator[pa.RecordBatch], plan: _Plan, side: str, stats: TableStats | None,
                 empty: pd.DataFrame):
        self.batches = batches
        self.plan = plan
        self.side = side
        self.stats = stats
        self.buf = empty
        self.done = False
        self.last: list[Any] | None = None

    def pull(self) -> None:
        for batch in self.batches:
            if self.stats is not None:
                self.stats.update(batch)
            if batch.num_rows == 0:
                continue
            df = _prepare(batch, self.plan, self.side)
            self._check_order(df)
            self.buf = pd.concat([self.buf, df], ignore_index=True) if len(self.buf) else df
            return
        self.done = True

    def _check_order(self, df: pd.DataFrame) -> None:
        cols = [df[k].to_numpy() for k in self.plan.key]
        for c in cols:
            if pd.isna(c).any():
                raise _Unordered("a key is NULL")
        if len(df) > 1:
            lt, _ = _lex([c[:-1] for c in cols], [c[1:] for c in cols])
            if not lt.all():
                raise _Unordered("keys are not strictly increasing in our comparison within a batch")
        if self.last is not None:
            lt, _ = _lex([np.asarray([v], dtype=object) for v in self.last], [c[:1] for c in cols])
            if not lt.all():
                raise _Unordered("keys are not strictly increasing in our comparison across batches")
        self.last = [c[-1] for c in cols]

    def take_upto(self, bound: list[Any] | None) -> pd.DataFrame:
        """Remove and return the buffered rows with key <= bound (all of them when bound is None)."""
        if bound is None or not len(self.buf):
            out, self.buf = self.buf, self.buf.iloc[0:0]
            return out
        lt, eq = _lex([self.buf[k].to_numpy() for k in self.plan.key], bound)
        sel = lt | eq
        out = self.buf[sel]
        self.buf = self.buf[~sel].reset_index(drop=True)
        return out.reset_index(drop=True)


def _open(store: SnapshotStore, manifest: Manifest | None, batch_rows: int,
          progress: Callable[[int], None] | None = None) -> _Opened:
    """One side, verified by the store before anything is read from it (``open_verified``: every
    part hashed, the version id recomputed; the row checks re-derived as the rows stream)."""
    if manifest is None:
        return None, iter(())
    schema, batches = store.open_verified(manifest, batch_rows=batch_rows)
    return (schema, batches) if progress is None else (schema, _told(batches, progress))


def _told(batches: Iterator[pa.RecordBatch], progress: Callable[[int], None]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        progress(batch.num_rows)
        yield batch


def _merge_join(side_a: _Opened, side_b: _Opened, plan: _Plan, sample: int) -> tuple[_Tally, dict, dict]:
    tally = _Tally(plan, sample)
    stats_a = TableStats(side_a[0]) if side_a[0] is not None else None
    stats_b = TableStats(side_b[0]) if side_b[0] is not None else None
    hashes = {f"__h{i}": np.zeros(0, np.uint64) for i in range(len(plan.common))}
    empty = pd.DataFrame({k: [] for k in plan.key} | hashes)
    sa = _Side(side_a[1], plan, "a", stats_a, empty)
    sb = _Side(side_b[1], plan, "b", stats_b, empty)
    while True:
        for s in (sa, sb):
            while not s.done and not len(s.buf):
                s.pull()
        if sa.done and sb.done and not len(sa.buf) and not len(sb.buf):
            break
        lasts = [s.last for s in (sa, sb) if not s.done and len(s.buf)]
        if not lasts:
            bound = None  # both exhausted: everything left
        elif len(lasts) == 1:
            bound = lasts[0]
        else:
            lt, _ = _lex([np.asarray([v], dtype=object) for v in lasts[0]], lasts[1])
            bound = lasts[0] if lt[0] else lasts[1]
        tally.join(sa.take_upto(bound), sb.take_upto(bound), plan.key)
    return tally, (stats_a.result() if stats_a else {}), (stats_b.result() if stats_b else {})


# ---------------------------------------------------------------- hash-partitioned join


def _hash_join(store: SnapshotStore, a: Manifest | None, b: Manifest | None, plan: _Plan,
               batch_rows: int, sample: int) -> tuple[_Tally, dict, dict]:
    rows = max(a.row_count if a else 0, b.row_count if b else 0)
    n_buckets = max(1, math.ceil(rows / (4 * batch_rows)))
    tally = _Tally(plan, sample)
    results = []
    with tempfile.TemporaryDirectory(prefix="snapshot-diff-") as tmp:
        for side, manifest in (("a", a), ("b", b)):
            schema, batches = _open(store, manifest, batch_rows)  # verified again: a second read
            stats = TableStats(schema) if schema is not None else None
            writers: dict[int, pq.ParquetWriter] = {}
            for batch in batches:
                if stats is not None:
                    stats.update(batch)
                if batch.num_rows == 0:
                    continue
                df = _prepare(batch, plan, side)
                df["__k"] = key_strings(df, plan.key)
                bucket = pd.util.hash_array(df["__k"].to_numpy(dtype=object)) % n_buckets
                for bk in np.unique(bucket):
                    t = pa.Table.from_pandas(df[bucket == bk], preserve_index=False)
                    if bk not in writers:
                        writers[bk] = pq.ParquetWriter(Path(tmp) / f"{side}-{bk}.parquet", t.schema)
                    writers[bk].write_table(t.cast(writers[bk].schema))
            for w in writers.values():
                w.close()
            results.append(stats.result() if stats else {})
        for bk in range(n_buckets):
            parts = []
            for side in ("a", "b"):
                p = Path(tmp) / f"{side}-{bk}.parquet"
                parts.append(pq.read_table(p).to_pandas() if p.exists() else
                             pd.DataFrame({"__k": pd.Series([], dtype=object),
                                           **{k: [] for k in plan.key},
                                           **{f"__h{i}": np.zeros(0, np.uint64) for i in range(len(plan.common))}}))
            tally.join(parts[0], parts[1], ["__k"])
    return tally, results[0], results[1]


# ---------------------------------------------------------------- entry point


def diff_versions(
    store: SnapshotStore,
    a: Manifest | None,
    b: Manifest | None,
    *,
    key: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    sample: int = SAMPLE_KEYS,
    progress: Callable[[int], None] | None = None,
) -> DataDiff:
    """Diff version ``a`` (older) against ``b`` (newer) of one partition; either may be None (absent).

    ``progress``, if given, is told the rows of each batch read (of either side) by the merge join
    (the CLI draws a bar over ``row_count`` of both; the hash-join fallback's second read is not told)."""
    if a is None and b is None:
        raise DiffError("nothing to diff: both versions are absent")
    ref = a or b
    keys = {tuple(m.key) for m in (a, b) if m is not None and m.key}
    if len(keys) > 1:
        raise DiffError(f"{ref.asset}/{ref.partition}: the versions have different keys {sorted(keys)}")
    key = list(keys.pop()) if keys else list(key or [])
    if not key:
        raise DiffError(f"{ref.asset}/{ref.partition}: no key recorded in the manifests and none given")
    for m in (a, b):
        if m is not None:
            missing = [k for k in key if k not in _schema_map(m)]
            if missing:
                raise DiffError(f"{m.where} lacks key column(s) {missing}")
    head: dict[str, Any] = dict(
        asset=ref.asset, partition=ref.partition,
        version_a=a.version if a else None, version_b=b.version if b else None, key=tuple(key),
        rows_a=a.row_count if a else 0, rows_b=b.row_count if b else 0,
        schema_changes=tuple(schema_changes(a, b)),
    )
    if a is not None and b is not None and a.version == b.version:
        return DataDiff(**head, same_version=True, rows_added=0, rows_removed=0, rows_changed=0,
                        rows_unchanged=a.row_count, changed_by_column={}, columns={}, samples=DiffSamples(),
                        method="same version")
    side_a, side_b = _open(store, a, batch_rows, progress), _open(store, b, batch_rows, progress)
    plan = _plan(key, side_a[0], side_b[0])
    try:
        tally, st_a, st_b = _merge_join(side_a, side_b, plan, sample)
        method = "merge-join on the key"
    except _Unordered as exc:
        tally, st_a, st_b = _hash_join(store, a, b, plan, batch_rows, sample)
        method = f"hash-partitioned join ({exc})"
    return DataDiff(
        **head,
        same_version=False,
        rows_added=tally.added,
        rows_removed=tally.removed,
        rows_changed=tally.changed,
        rows_unchanged=tally.unchanged,
        changed_by_column=dict(sorted(tally.by_column.items())),
        columns=column_shifts(st_a, st_b),
        samples=DiffSamples(**{what: tuple(keys) for what, keys in tally.samples.items()}),
        method=method,
    )
