"""The train/test split: a stable hash of each row's ``by`` values decides its side.

``sha256("snapshot_platform.split.v1" + canonical key)`` read as a number in [0, 1) is compared with
``test_fraction``. A row keeps its side in every version of every snapshot (a customer whose labels
changed is still in the test set), no random generator or row order is involved, and the same
function gives the same answer in any process, on any machine, in any year.

Values are canonicalised before hashing, so a key that arrives as ``5``, ``5.0`` or ``Decimal('5')``
(a type that changed between versions) hashes the same; strings hash as themselves.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

SPLIT_VERSION = "snapshot_platform.split.v1"
_SEP = "\x1f"
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
    return [_SEP.join(parts) for parts in zip(*cols)]


def bucket(key: str) -> float:
    """The key's position in [0, 1)."""
    digest = hashlib.sha256((SPLIT_VERSION + _SEP + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_test(keys: Iterable[str], test_fraction: float) -> np.ndarray:
    return np.fromiter((bucket(k) < test_fraction for k in keys), dtype=bool)


def test_mask(df: pd.DataFrame, by: list[str], test_fraction: float) -> np.ndarray:
    """True for rows in the test set."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    return is_test(key_strings(df, by), test_fraction)
