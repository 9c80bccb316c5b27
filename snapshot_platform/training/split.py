"""The train/test split: a stable hash of each row's ``by`` values decides its side.

``sha256("snapshot_platform.split.v1" + canonical key)`` read as a number in [0, 1) is compared with
``test_fraction``. A row keeps its side in every version of every snapshot (a customer whose labels
changed is still in the test set), no random generator or row order is involved, and the same
function gives the same answer in any process, on any machine, in any year.

Values are canonicalised before hashing (``store/keys.py``, shared with the snapshot diff), so a
key that arrives as ``5``, ``5.0`` or ``Decimal('5')`` (a type that changed between versions)
hashes the same; strings hash as themselves.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
import pandas as pd

from snapshot_platform.store.keys import SEP, key_strings

SPLIT_VERSION = "snapshot_platform.split.v1"


def bucket(key: str) -> float:
    """The key's position in [0, 1)."""
    digest = hashlib.sha256((SPLIT_VERSION + SEP + key).encode("utf-8")).digest()
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
