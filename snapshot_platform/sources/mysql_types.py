"""MySQL / MariaDB result types: the Arrow type, the database's type name and the value conversion
of a result column, from the protocol's column definition alone (never from the values); see
:mod:`snapshot_platform.sources.mysql` for how a read uses them.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import pyarrow as pa

# MySQL protocol column types (pymysql.constants.FIELD_TYPE)
_DECIMAL, _TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _NULL, _TIMESTAMP, _LONGLONG, _INT24 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
_DATE, _TIME, _DATETIME, _YEAR, _NEWDATE, _VARCHAR, _BIT = 10, 11, 12, 13, 14, 15, 16
_JSON, _NEWDECIMAL, _ENUM, _SET = 245, 246, 247, 248
_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB, _VAR_STRING, _STRING, _GEOMETRY = 249, 250, 251, 252, 253, 254, 255
_UNSIGNED_FLAG, _ENUM_FLAG, _SET_FLAG = 32, 256, 2048
_BINARY_CHARSET = 63
_NOT_FIXED_DEC = 31  # the scale of a FLOAT/DOUBLE printed with all its digits (no (M,D))
_RESULT_MAXLEN = 4  # bytes per character of the session's result character set, utf8mb4

_INTS = {
    _TINY: (pa.int8(), pa.uint8()),
    _SHORT: (pa.int16(), pa.uint16()),
    _INT24: (pa.int32(), pa.uint32()),
    _LONG: (pa.int32(), pa.uint32()),
    _LONGLONG: (pa.int64(), pa.uint64()),
}


def _decimal_type(length: int, scale: int, unsigned: bool) -> pa.DataType:
    """MySQL reports DECIMAL(p,s) with length p + (1 for the point if s > 0) + (1 for the sign if signed)."""
    precision = length - (1 if scale > 0 else 0) - (0 if unsigned else 1)
    precision = max(precision, scale, 1)
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def arrow_type(type_code: int, length: int, scale: int, flags: int, charsetnr: int) -> pa.DataType:
    """The Arrow type of one result column, from the protocol's column definition alone."""
    unsigned = bool(flags & _UNSIGNED_FLAG)
    if type_code in _INTS:
        return _INTS[type_code][1 if unsigned else 0]
    if type_code in (_DECIMAL, _NEWDECIMAL):
        return _decimal_type(length, scale, unsigned)
    if type_code == _FLOAT:
        return pa.float32()
    if type_code == _DOUBLE:
        return pa.float64()
    if type_code == _YEAR:
        return pa.int16()
    if type_code in (_DATE, _NEWDATE):
        return pa.date32()
    if type_code == _DATETIME:
        return pa.timestamp("us")
    if type_code == _TIMESTAMP:
        return pa.timestamp("us", tz="UTC")
    if type_code == _TIME:
        return pa.duration("us")
    if type_code == _BIT:
        return pa.uint64()
    if type_code == _NULL:
        return pa.null()
    if type_code == _GEOMETRY:
        return pa.binary()
    if type_code in (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB, _VAR_STRING, _STRING, _VARCHAR):
        return pa.binary() if charsetnr == _BINARY_CHARSET else pa.string()
    return pa.string()  # JSON, ENUM, SET and anything newer: as text


_INT_NAMES = {_TINY: "TINYINT", _SHORT: "SMALLINT", _INT24: "MEDIUMINT", _LONG: "INT", _LONGLONG: "BIGINT"}
_SIMPLE_NAMES = {_FLOAT: "FLOAT", _DOUBLE: "DOUBLE", _YEAR: "YEAR", _DATE: "DATE", _NEWDATE: "DATE",
                 _NULL: "NULL", _GEOMETRY: "GEOMETRY", _JSON: "JSON", _ENUM: "ENUM", _SET: "SET"}
_BLOB_NAMES = ((255, "TINY"), (65535, ""), (16777215, "MEDIUM"))


def source_type(type_code: int, length: int, scale: int, flags: int, charsetnr: int) -> str:
    """The database type of a result column as its metadata tells it (``BIGINT UNSIGNED``, ``DECIMAL(20,4)``).

    The protocol does not tell ``JSON`` (MariaDB: ``LONGTEXT``) or ``INET6``/``UUID`` (``CHAR(39)``/
    ``CHAR(36)``) from the type they are sent as.
    """
    unsigned = " UNSIGNED" if flags & _UNSIGNED_FLAG else ""
    binary = charsetnr == _BINARY_CHARSET
    chars = length if binary else length // _RESULT_MAXLEN
    if type_code in _INT_NAMES:
        return _INT_NAMES[type_code] + unsigned
    if type_code in (_DECIMAL, _NEWDECIMAL):
        t = _decimal_type(length, scale, bool(unsigned))
        return f"DECIMAL({t.precision},{t.scale}){unsigned}"
    if type_code in (_FLOAT, _DOUBLE):
        name = _SIMPLE_NAMES[type_code]
        return name if scale == _NOT_FIXED_DEC else f"{name}({length},{scale})"
    if type_code in (_DATETIME, _TIMESTAMP, _TIME):
        name = {_DATETIME: "DATETIME", _TIMESTAMP: "TIMESTAMP", _TIME: "TIME"}[type_code]
        return f"{name}({scale})" if scale else name
    if type_code == _BIT:
        return f"BIT({length})"
    if flags & _ENUM_FLAG:
        return "ENUM"
    if flags & _SET_FLAG:
        return "SET"
    if type_code == _STRING:
        return f"BINARY({chars})" if binary else f"CHAR({chars})"
    if type_code in (_VAR_STRING, _VARCHAR):
        return f"VARBINARY({chars})" if binary else f"VARCHAR({chars})"
    if type_code in (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB):
        size = next((prefix for limit, prefix in _BLOB_NAMES if chars <= limit), "LONG")
        return size + ("BLOB" if binary else "TEXT")
    return _SIMPLE_NAMES.get(type_code, f"type {type_code}")


def needs_double(type_code: int, scale: int) -> bool:
    """Whether the text protocol prints this column with fewer digits than it holds (see the module doc)."""
    return type_code == _FLOAT or (type_code == _DOUBLE and scale != _NOT_FIXED_DEC)


def _float32(value: float) -> float:
    """A FLOAT read as a double: the same number as a float32, or ValueError (never a rounded value)."""
    try:
        (narrow,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:
        raise ValueError(value) from None
    if narrow != value:
        raise ValueError(value)
    return value


def _bits(value: Any) -> Any:
    return int.from_bytes(value, "big") if isinstance(value, (bytes, bytearray)) else value


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    return value


def converter(t: pa.DataType, type_code: int) -> Callable[[Any], Any] | None:
    if type_code == _BIT:
        return _bits
    if type_code == _FLOAT:
        return _float32
    if pa.types.is_string(t):
        return _text
    return None
