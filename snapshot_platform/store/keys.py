"""The canonical text of a row's key: the same for equal values of any type (``5``, ``5.0`` and
``Decimal('5')``), ISO for times. The train/test split (``training/split.py``) hashes it, and the
snapshot diff (``diff.py``) joins on it when the two versions' keys are not in one order."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import numpy as np
import pandas as pd

SEP = "\x1f"  # between the key's columns
_NULL = "\x00"


def canonical(value: Any) -> str:
    """One value's canonical text: the same for equal numbers of any type, ISO for times."""
    if value is None or value is pd.NaT:
        return _NULL
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return _NULL
        if f.is_integer():
            return str(int(f))
        return repr(f)
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return _NULL
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _column_strings(s: pd.Series) -> list[str]:
    if pd.api.types.is_integer_dtype(s.dtype) and not s.hasnans:
        return s.astype("int64").astype(str).tolist()
    return [canonical(v) for v in s.tolist()]


def key_strings(df: pd.DataFrame, by: list[str]) -> list[str]:
    """The canonical key of each row (columns joined by U+001F)."""
    cols = [_column_strings(df[c]) for c in by]
    if len(cols) == 1:
        return cols[0]
    return [SEP.join(parts) for parts in zip(*cols)]
