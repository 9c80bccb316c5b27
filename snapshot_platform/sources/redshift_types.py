"""Redshift result types: the Arrow type of a result column from its type OID (and ``NUMERIC``
precision/scale), and the exact conversion of the values the driver hands over; see
:mod:`snapshot_platform.sources.redshift` for how a read uses them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import pyarrow as pa

# type OIDs decoded natively; everything else arrives as the server's text
_BOOL, _INT8, _INT2, _INT4, _OID, _FLOAT4, _FLOAT8, _NUMERIC = 16, 20, 21, 23, 26, 700, 701, 1700
_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ, _BYTEA = 1082, 1083, 1114, 1184, 17
_NATIVE = {
    _BOOL: pa.bool_(),
    _INT8: pa.int64(),
    _INT2: pa.int16(),
    _INT4: pa.int32(),
    _OID: pa.int64(),
    _FLOAT4: pa.float32(),
    _FLOAT8: pa.float64(),
    _DATE: pa.date32(),
    _TIME: pa.time64("us"),
    _TIMESTAMP: pa.timestamp("us"),
    _TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    _BYTEA: pa.binary(),
}


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> pa.DataType:
    if type_code == _NUMERIC:
        if precision is None or precision <= 0 or scale is None:
            return pa.string()  # unconstrained NUMERIC: exact as text
        if scale < 0 or scale > precision:
            return pa.string()
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    return _NATIVE.get(type_code, pa.string())


def _decimal_text(v: Any) -> str:
    return format(v, "f") if hasattr(v, "as_tuple") and v.is_finite() else str(v)


class Inexact(ValueError):
    """A value the column's Arrow type cannot hold (its text is the message)."""


# dates and times travel as the server's ISO text (DateStyle ISO, TimeZone UTC) and become day and
# microsecond counts here: Python's datetime stops at year 9999 and knows no BC, Arrow's types do not
_ISO = re.compile(r"(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:\+00(?::00)?)?)?( BC)?")
_CLOCK = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _temporal(text: str, with_time: bool) -> int:
    m = _ISO.fullmatch(text)
    if m is None or (m.group(4) is None) == with_time:
        raise Inexact(repr(text))
    year = int(m.group(1))
    days = _days_from_civil(1 - year if m.group(8) else year, int(m.group(2)), int(m.group(3)))
    if not with_time:
        return days
    us = ((int(m.group(4)) * 60 + int(m.group(5))) * 60 + int(m.group(6))) * 1_000_000
    us += days * 86_400_000_000 + int((m.group(7) or "0").ljust(6, "0"))
    if us >= 2**63:
        raise Inexact(repr(text))  # after 294247-01-10: beyond an int64 count of microseconds
    return us


def _clock(text: str) -> int:
    m = _CLOCK.fullmatch(text)
    us = None if m is None else (
        ((int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))) * 1_000_000
        + int((m.group(4) or "0").ljust(6, "0")))
    if us is None or us >= 86_400_000_000:
        raise Inexact(repr(text))  # 24:00:00: an Arrow time is within one day
    return us


def converter(t: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_date32(t):
        return lambda v: _temporal(v, False)
    if pa.types.is_timestamp(t):
        return lambda v: _temporal(v, True)
    if pa.types.is_time64(t):
        return _clock
    if pa.types.is_string(t):
        return lambda v: v if isinstance(v, str) else (_decimal_text(v) if hasattr(v, "as_tuple") else (
            json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    if pa.types.is_binary(t):
        return bytes
    return None


def text_for_everything_else(conn: Any) -> None:
    """Load every type we do not decode natively as the server's own text (json, interval, arrays,
    uuid, Redshift's SUPER...), so nothing is reinterpreted by Python on the way."""
    from psycopg.adapt import Loader
    from psycopg.postgres import types as builtins

    class _Text(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode("utf-8")

    native = (set(_NATIVE) | {_NUMERIC}) - {_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ}
    for info in builtins:
        if info.oid not in native:
            conn.adapters.register_loader(info.oid, _Text)
        if getattr(info, "array_oid", 0):
            conn.adapters.register_loader(info.array_oid, _Text)


def type_name(conn: Any, oid: int) -> str:
    """The database's name of a result type (``date``, ``super``...), from psycopg's registry of
    built-in types, else ``oid <n>`` (Redshift's own types: SUPER, VARBYTE, GEOMETRY...)."""
    from psycopg.postgres import types as builtins

    info = builtins.get(oid)
    return info.name if info is not None else f"oid {oid}"
