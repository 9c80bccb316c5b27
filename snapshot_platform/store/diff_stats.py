"""Per-column summary statistics of a snapshot version, accumulated batch by batch, and how they
moved between two versions (used by the keyed diff, ``diff.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.store.diff_report import ColumnShift


def stat_kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t):
        return "ordered"
    return "other"


def json_value(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


@dataclass
class _ColumnStats:
    kind: str
    rows: int = 0
    nulls: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: Any = None
    max: Any = None

    def update(self, arr: pa.Array) -> None:
        self.rows += len(arr)
        if self.kind == "numeric":
            values = arr.cast(pa.float64())
            nan = pc.is_nan(values).fill_null(False)
            values = values.filter(pc.and_(pc.is_valid(values), pc.invert(nan)))
            nb = len(values)
            self.nulls += len(arr) - nb
            if nb == 0:
                return
            mb = pc.mean(values).as_py()
            m2b = pc.variance(values, ddof=0).as_py() * nb
            delta = mb - self.mean
            total = self.n + nb
            self.mean += delta * nb / total
            self.m2 += m2b + delta * delta * self.n * nb / total
            self.n = total
            mm = pc.min_max(values).as_py()
        else:
            self.nulls += arr.null_count
            if self.kind != "ordered" or arr.null_count == len(arr):
                return
            mm = pc.min_max(arr).as_py()
        lo, hi = mm["min"], mm["max"]
        self.min = lo if self.min is None or lo < self.min else self.min
        self.max = hi if self.max is None or hi > self.max else self.max

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "nulls": self.nulls,
                               "null_fraction": self.nulls / self.rows if self.rows else 0.0}
        if self.kind == "numeric":
            out.update(mean=self.mean if self.n else None,
                       std=math.sqrt(self.m2 / self.n) if self.n else None,
                       min=self.min, max=self.max)
        elif self.kind == "ordered":
            out.update(min=json_value(self.min), max=json_value(self.max))
        return out


class TableStats:
    def __init__(self, schema: pa.Schema):
        self.columns = {f.name: _ColumnStats(stat_kind(f.type)) for f in schema}

    def update(self, batch: pa.RecordBatch) -> None:
        for name, st in self.columns.items():
            st.update(batch.column(name))

    def result(self) -> dict[str, dict[str, Any]]:
        return {name: st.result() for name, st in self.columns.items()}


def column_shifts(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, ColumnShift]:
    """Per column: the statistics of each side and how they moved (b − a)."""
    out: dict[str, ColumnShift] = {}
    for name in list(a) + [n for n in b if n not in a]:
        sa, sb = a.get(name), b.get(name)
        shift: dict[str, Any] = {}
        if sa and sb:
            shift["null_fraction"] = sb["null_fraction"] - sa["null_fraction"]
            for k in ("mean", "std", "min", "max"):
                va, vb = sa.get(k), sb.get(k)
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
                    shift[k] = vb - va
            if sa.get("std") and sb.get("mean") is not None and sa.get("mean") is not None:
                shift["mean_in_std_a"] = (sb["mean"] - sa["mean"]) / sa["std"]
        out[name] = ColumnShift(a=sa, b=sb, shift=shift)
    return out
