"""Content-defined part boundaries: where the writer ends one Parquet part and starts the next.

Rows arrive in key order. A part ends after a row whose *key hash* is 0 modulo
``WriterSettings.part_boundary_modulus``, once the part holds at least ``part_min_rows`` rows, and in
any case at ``part_rows`` rows. A boundary thus depends only on the rows just before it, not on
where the snapshot starts or how the source batched its rows: an insert or update in one key range
changes the parts around it, and every other part keeps its bytes, hence its sha256, hence its one
stored copy under ``<root>/parts/`` (docs/storage.md, "Deduplicated storage").

The key hash (``key-hash-1``) is a 64-bit digest of the boundary columns' values, computed with
numpy over whole batches, identical on every platform and in every process (no Python ``hash``,
no seed): integers, booleans, dates, times, timestamps and durations by their 64-bit value;
everything else by its canonical bytes (strings and binaries as stored; floats and decimals as
Arrow's cast to text writes them) through a polynomial hash modulo 2**64; dictionaries decoded;
NULL a constant; each value mixed with splitmix64's finaliser, and the columns combined in order.
The boundary columns are the manifest's ``key`` (the sort order); without a key, every column whose type has canonical bytes (not lists, structs or maps). With none of those
the parts are cut at ``part_rows`` only.

Plain library: no Dagster, no database.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

METHOD = "key-hash-1"

_U64 = np.uint64
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_PRIME = _U64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial's base
_NULL = _U64(0x6E756C6C)
_powers = np.ones(1, dtype=_U64)  # _PRIME ** k mod 2**64, grown on demand


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (uint64 arithmetic wraps modulo 2**64)."""
    x = x ^ (x >> _U64(30))
    x = x * _M1
    x = x ^ (x >> _U64(27))
    x = x * _M2
    return x ^ (x >> _U64(31))


def _power_table(n: int) -> np.ndarray:
    global _powers
    if len(_powers) < n:
        steps = np.full(n, _PRIME, dtype=_U64)
        steps[0] = 1
        _powers = np.cumprod(steps, dtype=_U64)
    return _powers[:n]


def _binary_like(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t) or pa.types.is_string_view(t))


def hashable(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` has canonical bytes the key hash can digest."""
    if pa.types.is_dictionary(t):
        return hashable(t.value_type)
    return (_binary_like(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_decimal(t) or pa.types.is_temporal(t) or pa.types.is_null(t))


def _canonical_bytes(arr: pa.Array) -> pa.Array:
    """The column as ``large_binary``: its values' canonical bytes (see the module docstring)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.large_binary())
    if not _binary_like(t):
        arr = pc.cast(arr, pa.large_string())
    return pc.cast(arr, pa.large_binary())


def _integer_like(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_date(t) or pa.types.is_time(t)
            or pa.types.is_timestamp(t) or pa.types.is_duration(t))


# Arrow -> numpy through the buffers: pyarrow's own to_numpy (and any conversion of a Python
# scalar) first imports pandas, 0.25 s of a snapshot process that never uses it.

def _int64_values(arr: pa.Array) -> np.ndarray:
    """The values buffer of an int64 array (a view; entries under NULLs are unspecified)."""
    return np.frombuffer(arr.buffers()[1], dtype="<i8", count=len(arr), offset=arr.offset * 8)


def _null_mask(arr: pa.Array) -> np.ndarray:
    """True where ``arr`` is NULL (bool, one per row)."""
    validity = arr.buffers()[0]
    if validity is None:
        return np.zeros(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)] == 0


def _column_hash(arr: pa.Array) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if _integer_like(arr.type):
        # integers, booleans, dates, times, timestamps, durations: their 64-bit value (two's
        # complement, as the type stores it: a timestamp's unit is part of the schema) mixed once
        if pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type):
            values = pc.cast(arr, pa.int64(), safe=False)
        else:  # a temporal type: the integer it stores
            values = pc.cast(arr.view(pa.int32() if arr.type.bit_width == 32 else pa.int64()), pa.int64())
        h = _mix(_int64_values(values).view(_U64) ^ _GOLDEN)
        if arr.null_count:
            h[_null_mask(arr)] = _NULL  # whatever the values buffer holds under a NULL
        return h
    data = _canonical_bytes(arr)
    n = len(data)
    _validity, offsets_buf, data_buf = data.buffers()
    offsets = np.frombuffer(offsets_buf, dtype="<i8", count=n + 1, offset=data.offset * 8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    if hi > lo:
        values = np.frombuffer(data_buf, dtype=np.uint8, count=hi - lo, offset=lo).astype(_U64) + _U64(1)
        pos = np.arange(hi - lo, dtype=np.int64) - np.repeat(offsets[:-1] - lo, lengths)
        summed = np.concatenate([np.zeros(1, _U64), np.cumsum(values * _power_table(int(lengths.max()))[pos],
                                                               dtype=_U64)])
        sums = summed[offsets[1:] - lo] - summed[offsets[:-1] - lo]
    else:
        sums = np.zeros(n, dtype=_U64)
    h = _mix(sums ^ _mix(lengths.astype(_U64) + _GOLDEN))
    if data.null_count:
        h[_null_mask(data)] = _NULL
    return h


def key_hashes(batch: pa.RecordBatch, columns: list[str]) -> np.ndarray:
    """The key hash of every row of ``batch`` over ``columns`` (uint64, one per row)."""
    h = np.full(batch.num_rows, _U64(len(columns)), dtype=_U64)
    with np.errstate(over="ignore"):
        for c in columns:
            h = _mix(h * _GOLDEN + _column_hash(batch.column(c)))
    return h


def boundary_columns(schema: pa.Schema, key: list[str] | tuple[str, ...] | None) -> list[str]:
    """The columns whose hash places the boundaries: the key (its columns present in ``schema``),
    else every column with canonical bytes."""
    if key:
        cols = [k for k in key if k in schema.names and hashable(schema.field(k).type)]
        if cols:
            return cols
    return [f.name for f in schema if hashable(f.type)]


class PartCutter:
    """Tells, batch after batch, where the current part ends (the rule in the module docstring)."""

    def __init__(self, columns: list[str], modulus: int, min_rows: int, max_rows: int):
        if max_rows < 1 or modulus < 1:
            raise ValueError("part_rows and part_boundary_modulus must be positive")
        self.columns = columns
        self.modulus = _U64(modulus)
        self.min_rows = max(1, min(min_rows, max_rows))
        self.max_rows = max_rows
        self.rows_in_part = 0  # rows of the current part written before this batch

    def cuts(self, batch: pa.RecordBatch) -> list[int]:
        """The row offsets in ``batch`` at which a part ends (exclusive ends, ascending)."""
        n = batch.num_rows
        if self.columns:
            candidates = np.flatnonzero(key_hashes(batch, self.columns) % self.modulus == 0) + 1
        else:
            candidates = np.zeros(0, dtype=np.int64)
        out: list[int] = []
        base, have = 0, self.rows_in_part
        while True:
            longest = base + (self.max_rows - have)
            first = np.searchsorted(candidates, base + max(self.min_rows - have, 1))
            end = min(int(candidates[first]) if first < len(candidates) else longest, longest)
            if end > n:
                self.rows_in_part = have + n - base
                return out
            out.append(end)
            base, have = end, 0
            if end == n:
                self.rows_in_part = 0
                return out
