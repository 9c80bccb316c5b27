"""BigQuery result types: the exact Arrow type and BigQuery's own name of a result field
(``SchemaField``), from the schema alone; see :mod:`snapshot_platform.sources.bigquery` for how a read
uses them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

_SCALARS = {
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "DECIMAL": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BIGDECIMAL": pa.decimal256(76, 38),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "GEOGRAPHY": pa.string(),
    "JSON": pa.string(),
}



def kind_of(field: Any) -> str:
    """The field's type without parameters: ``RANGE<DATE>`` (as a dry run names it) is ``RANGE``."""
    return (field.field_type or "STRING").upper().split("<", 1)[0].strip()


def _range_element(field: Any) -> str:
    element = getattr(field, "range_element_type", None)
    name = getattr(element, "element_type", None) if element is not None else None
    if name is None and "<" in (field.field_type or ""):
        name = field.field_type.split("<", 1)[1].rstrip(">")
    return (name or "TIMESTAMP").upper()


def type_name(field: Any) -> str:
    """BigQuery's name of a result field's type: ``BIGNUMERIC``, ``ARRAY<STRUCT<a INT64, b STRING>>``."""
    kind = kind_of(field)
    if kind in ("RECORD", "STRUCT"):
        t = "STRUCT<" + ", ".join(f"{f.name} {type_name(f)}" for f in field.fields) + ">"
    elif kind == "RANGE":
        t = f"RANGE<{_range_element(field)}>"
    else:
        t = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(kind, kind)
    return f"ARRAY<{t}>" if field.mode == "REPEATED" else t


def arrow_type(field: Any) -> pa.DataType | None:
    """The exact Arrow type of one BigQuery result field (``SchemaField``), from the schema alone;
    ``None`` where there is none (INTERVAL, or a type this release does not know)."""
    kind = kind_of(field)
    if kind in ("RECORD", "STRUCT"):
        members = [(f.name, arrow_type(f)) for f in field.fields]
        if any(m is None for _, m in members):
            return None
        t: pa.DataType = pa.struct([pa.field(n, m, True) for n, m in members])
    elif kind == "RANGE":
        bound = _SCALARS.get(_range_element(field))
        if bound is None:
            return None
        t = pa.struct([pa.field("start", bound), pa.field("end", bound)])
    elif kind in _SCALARS:
        t = _SCALARS[kind]
    else:
        return None
    if field.mode == "REPEATED":
        t = pa.list_(t)
    return t
