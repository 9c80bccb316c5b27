"""PostgreSQL result types: how each column of a result travels from the server and what it becomes
in the snapshot (:func:`transfer_plan`), and the exact conversion of the driver's Arrow batches
(:func:`apply_plan`); see :mod:`snapshot_platform.sources.postgres` for how a read uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from snapshot_platform.sources.base import SourceError
from snapshot_platform.sources.sql import quote_identifier


def _numeric_type(typmod: int) -> pa.DataType | None:
    if typmod < 4:
        return None
    precision = ((typmod - 4) >> 16) & 0xFFFF
    # PostgreSQL 15 keeps the scale as an 11-bit signed number: NUMERIC(5,-2) rounds to hundreds,
    # NUMERIC(2,5) holds 0.000xx. Arrow wants 0 <= scale <= precision: widen the precision instead.
    scale = (typmod - 4) & 0x7FF
    if scale & 0x400:
        scale -= 0x800
    if scale < 0:
        precision, scale = precision - scale, 0
    elif scale > precision:
        precision = scale
    if precision <= 38:
        return pa.decimal128(precision, scale)
    return pa.decimal256(precision, scale)


Convert = Callable[[pa.Array], pa.Array]


class _Inexact(Exception):
    """A value that the column's snapshot type cannot hold exactly (raised by a conversion)."""


def _text_to(target: pa.DataType) -> Convert:
    return lambda col: pc.cast(_storage(col), target)


def _storage(col: pa.Array) -> pa.Array:
    return col.storage if isinstance(col.type, pa.BaseExtensionType) else col


# PostgreSQL's own range: 4714-11-24 BC to 5874897-12-31 (dates), 294276-12-31 (timestamps). The
# driver shifts PostgreSQL's 2000 epoch to 1970 without an overflow check: infinity, -infinity and
# timestamps after 294247-01-10 wrap around to values below PostgreSQL's first day, never a legal one.
_PG_FIRST_DAY = -2440588  # 4714-11-24 BC, in days since 1970-01-01
_PG_LAST_DAY = 2145042905  # 5874897-12-31
_PG_FIRST_US = _PG_FIRST_DAY * 86_400_000_000
_LAST_TIME_US = 86_400_000_000 - 1  # 23:59:59.999999: PostgreSQL's 24:00:00 is beyond an Arrow time


def _min_max(values: pa.Array) -> tuple[Any, Any]:
    found = pc.min_max(values)
    return found["min"].as_py(), found["max"].as_py()


def _checked_days(col: pa.Array) -> pa.Array:
    lo, hi = _min_max(_storage(col).view(pa.int32()))
    if lo is not None and (lo < _PG_FIRST_DAY or hi > _PG_LAST_DAY):
        raise _Inexact("holds infinity or -infinity, which date32 cannot hold")
    return col


def _checked_instants(col: pa.Array) -> pa.Array:
    lo, _ = _min_max(_storage(col).view(pa.int64()))
    if lo is not None and lo < _PG_FIRST_US:
        raise _Inexact(
            f"holds infinity, -infinity or a time after 294247-01-10, which {col.type} cannot hold"
        )
    return col


def _checked_times(col: pa.Array) -> pa.Array:
    _, hi = _min_max(_storage(col).view(pa.int64()))
    if hi is not None and hi > _LAST_TIME_US:
        raise _Inexact("holds 24:00:00, which time64 cannot hold (an Arrow time is within one day)")
    return col


def _money(scale: int) -> tuple[pa.DataType, Convert]:
    """``money`` arrives as its int64 count of the smallest unit (cents): the same integer, read as
    a decimal with the currency's fraction digits, is the exact amount."""
    target = pa.decimal128(19, scale)  # 19 digits hold every int64

    def convert(col: pa.Array) -> pa.Array:
        wide = pc.cast(_storage(col), pa.decimal128(19, 0))
        return pa.Array.from_buffers(target, len(wide), wide.buffers(), wide.null_count, wide.offset)

    return target, convert


# types whose driver decoding is exact as it is (the driver's Arrow type is checked too: a future
# driver decoding one differently sends it as text instead)
_AS_DECODED = {
    "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "float4": pa.float32(),
    "float8": pa.float64(), "bool": pa.bool_(), "text": pa.string(), "varchar": pa.string(),
    "bpchar": pa.string(), "name": pa.string(), "bytea": pa.binary(),
}
_CHECKED = {
    "date": (pa.date32(), _checked_days),
    "timestamp": (pa.timestamp("us"), _checked_instants),
    "timestamptz": (pa.timestamp("us", tz="UTC"), _checked_instants),
    "time": (pa.time64("us"), _checked_times),
}
# sent as the server's text, parsed exactly into an Arrow type (the text of an unsigned number)
_TEXT_AS = {"xid": pa.uint32(), "cid": pa.uint32(), "xid8": pa.uint64()}
# ``::text`` is the type's output (what psql shows) except where pg_cast has its own function:
# inet's and cidr's add the netmask (``::1/128`` for ``::1``), so their output function is called.
# (xml's ``::text`` is its stored text, with its declaration, which the output function drops.)
_OUTPUT_TEXT = {"inet": "pg_catalog.inet_out({})::text", "cidr": "pg_catalog.cidr_out({})::text"}


def _decoded(pg_type: str, typ: pa.DataType, money_scale: int) -> tuple[pa.DataType, Convert | None] | None:
    """The snapshot type and conversion of a value the driver decodes exactly; None: send it as text."""
    storage = typ.storage_type if isinstance(typ, pa.BaseExtensionType) else typ
    if _AS_DECODED.get(pg_type) == typ:
        return typ, None
    if pg_type in _CHECKED and _CHECKED[pg_type][0] == typ:
        return typ, _CHECKED[pg_type][1]
    if pg_type == "uuid" and storage == pa.binary(16):
        return storage, _storage  # its 16 bytes
    if pg_type in ("json", "jsonb") and storage == pa.string():
        return storage, _storage  # its text (jsonb: the server's normalised text of it)
    if pg_type == "money" and typ == pa.int64():
        return _money(money_scale)
    if pg_type == "oid" and typ == pa.int32():
        return pa.uint32(), lambda col: col.view(pa.uint32())  # the driver reads it as signed
    return None


def _on_values(convert: Convert, list_type: pa.ListType) -> Convert:
    """A conversion of an array's elements applied to a list column (a check returns its input)."""

    def apply(col: pa.Array) -> pa.Array:
        values = col.values
        converted = convert(values)
        if converted is values:
            return col
        return pa.ListArray.from_arrays(col.offsets, converted, type=list_type, mask=col.is_null())

    return apply


def _source_type(meta: dict[str, str], type_names: dict[int, str]) -> str:
    name = meta.get("POSTGRESQL:type", "")
    m = re.fullmatch(r"unnamed<oid:(\d+)>", name)
    if m:
        name = type_names.get(int(m.group(1)), name)
    return f"{name[1:]}[]" if name.startswith("_") else name


@dataclass(frozen=True)
class _Plan:
    """How a result travels: its snapshot schema, per column the conversion of the driver's array,
    the select items (the columns, then the hidden per-row checks), which column each check guards
    and each column's PostgreSQL type."""

    schema: pa.Schema
    converts: list[Convert | None]
    select: list[str]
    checks: list[str]
    source_types: dict[str, str]


def _unnamed_oids(schema: pa.Schema) -> list[int]:
    found = []
    for f in schema:
        m = re.fullmatch(rb"unnamed<oid:(\d+)>", (f.metadata or {}).get(b"POSTGRESQL:type", b""))
        if m:
            found.append(int(m.group(1)))
    return found


# the driver release that first reports every result column's PostgreSQL type and typmod
# (``POSTGRESQL:type``, ``POSTGRESQL:typmod``); pyproject.toml asks for it
TYPED_DRIVER = "1.13"


def _driver_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adbc-driver-postgresql")
    except PackageNotFoundError:
        return "unknown"


def require_column_types(schema: pa.Schema, source: str) -> None:
    """Refuse a driver that does not say each result column's PostgreSQL type, before a row is read.

    The plan keeps a column's value exactly only where it knows the column's PostgreSQL type; an
    earlier driver (before 1.13) reports it for a few types only, and every other column would
    travel as text: an integer or a date column silently become strings. A SourceError instead,
    naming the column and the driver release.
    """
    for f in schema:
        if b"POSTGRESQL:type" not in (f.metadata or {}):
            raise SourceError(
                f"source {source}: the installed ADBC PostgreSQL driver (adbc-driver-postgresql "
                f"{_driver_version()}) does not report the PostgreSQL type of column {f.name!r}, without "
                f"which its values cannot be kept exactly: install adbc-driver-postgresql {TYPED_DRIVER} or "
                f"later (constraints.txt pins the tested release)",
                code="driver",
            )


def transfer_plan(
    schema: pa.Schema, money_scale: int = 2, type_names: dict[int, str] | None = None
) -> _Plan:
    """For each result column: its snapshot type, the client-side conversion, and the select item.

    A column is kept exactly or the read fails naming it, never a changed value. The driver's
    decoding is kept only for the types where it is exact (``_AS_DECODED``, ``_CHECKED``, uuid,
    json, money, oid, and 1-D arrays of those); every other type travels and stays as the server's
    text of it (``::text``: inet, cidr, bit, timetz, ranges, xml, composites, geometric types,
    ``"char"``...), never as the driver's binary wire bytes. Values a type cannot hold (infinity in a
    date, 24:00:00 in a time, an array of two dimensions) fail the read naming the column.

    Decoding PostgreSQL's binary NUMERIC into Arrow is the costly part of a read (the driver makes
    strings of it, slowly), so NUMERIC travels as text, which the server writes cheaply and Arrow
    parses exactly into decimal128(p,s) (measured on 2M TPC-H rows: 0.97 s for four NUMERIC columns
    against 1.81 s through the driver's decoding, and 1.12 s of server time for a scaled int8, which
    loads the source more). An unconstrained NUMERIC has no scale and stays text. NaN or infinity
    cannot be held exactly by a decimal: the read fails naming the column. An INTERVAL, which Parquet
    cannot hold, travels and stays as PostgreSQL's text of it (``1 day 02:00:00``).
    """
    fields: list[pa.Field] = []
    converts: list[Convert | None] = []
    select: list[str] = []
    checks: list[tuple[str, str]] = []
    source_types: dict[str, str] = {}
    for f in schema:
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        pg_type = meta.get("POSTGRESQL:type", "")
        source_types[f.name] = _source_type(meta, type_names or {})
        ident = quote_identifier(f.name)
        column = f"snapshot_query.{ident}"
        as_text = f"{_OUTPUT_TEXT.get(pg_type, '{}::text').format(column)} AS {ident}"
        item, out_type, convert = column, f.type, None
        decoded = _decoded(pg_type, f.type, money_scale)
        if pg_type == "numeric":
            target = _numeric_type(int(meta.get("POSTGRESQL:typmod", "-1")))
            item, out_type = as_text, target or pa.string()
            convert = _text_to(target) if target is not None else None
        elif pg_type in _TEXT_AS:
            item, out_type, convert = as_text, _TEXT_AS[pg_type], _text_to(_TEXT_AS[pg_type])
        elif decoded is not None:
            out_type, convert = decoded
        elif pg_type.startswith("_") and pa.types.is_list(f.type) and (
            element := _decoded(pg_type[1:], f.type.value_type, money_scale)
        ) is not None:
            # a list holds a 1-D array whose subscripts start at 1 (the driver flattens the others):
            # a hidden per-row check finds the others, which fail the read naming the column
            value_type, value_convert = element
            out_type = pa.list_(pa.field(f.type.value_field.name, value_type, True))
            if out_type == f.type:
                out_type = f.type
            convert = _on_values(value_convert, out_type) if value_convert is not None else None
            checks.append((f.name, f"(array_ndims({column}) > 1 OR array_lower({column}, 1) <> 1)"))
        else:
            item, out_type = as_text, pa.string()
        fields.append(pa.field(f.name, out_type, True))
        converts.append(convert)
        select.append(item)
    select += [f"{expr} AS {quote_identifier(f'snapshot_platform_check_{i}')}" for i, (_, expr) in enumerate(checks)]
    return _Plan(pa.schema(fields), converts, select, [name for name, _ in checks], source_types)


def _check_advice(name: str) -> str:
    return (f"cast it in the query ({quote_identifier(name)}::text keeps the server's exact text) "
            f"or replace those values there")


def apply_plan(plan: _Plan, batch: pa.RecordBatch, source: str) -> pa.RecordBatch:
    """The driver's batch in the snapshot's schema; a SourceError naming the column for a value
    that the column's snapshot type cannot hold exactly."""
    n = len(plan.schema)
    for i, name in enumerate(plan.checks):
        if pc.any(batch.column(n + i)).as_py():
            raise SourceError(
                f"source {source}: column {name!r} ({plan.source_types.get(name)}) holds an array of more "
                f"than one dimension or whose subscripts do not start at 1, which a list cannot hold "
                f"exactly: {_check_advice(name)}"
            )
    cols = []
    for f, col, convert in zip(plan.schema, batch.columns[:n], plan.converts):
        if convert is not None:
            try:
                col = convert(col)
            except _Inexact as exc:
                raise SourceError(
                    f"source {source}: column {f.name!r} ({plan.source_types.get(f.name)}) {exc}: "
                    f"{_check_advice(f.name)}"
                ) from None
            except pa.ArrowException as exc:
                raise SourceError(
                    f"source {source}: column {f.name!r} ({plan.source_types.get(f.name)}) has a value that "
                    f"{f.type} cannot hold exactly: {exc}"
                ) from None
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=plan.schema)


def catalog_facts(cur: Any, probe: pa.Schema) -> dict[str, Any]:
    """What the plan needs from the server beyond the probe: the fraction digits of ``money`` (from
    ``lc_monetary``) and the names of types the driver does not know (ranges...).

    First it fixes, for this transaction, the settings that shape the server's text of values (what
    ``::text`` columns keep): ISO dates, PostgreSQL intervals, shortest exact floats, hex bytea. The
    same data then gives the same text, and the same bytes, whatever the server's defaults.
    """
    cur.execute(
        "SELECT set_config('DateStyle', 'ISO, MDY', true), set_config('IntervalStyle', 'postgres', true),"
        " set_config('extra_float_digits', '1', true), set_config('bytea_output', 'hex', true)"
    )
    cur.fetchall()
    facts: dict[str, Any] = {}
    pg_types = {(f.metadata or {}).get(b"POSTGRESQL:type") for f in probe}
    if pg_types & {b"money", b"_money"}:
        cur.execute("SELECT scale(0::money::numeric)")
        facts["money_scale"] = int(cur.fetchone()[0])
    oids = _unnamed_oids(probe)
    if oids:
        cur.execute(
            "SELECT oid::int8, format_type(oid, NULL) FROM pg_type"
            " WHERE oid::text = ANY(string_to_array($1, ','))",
            parameters=(",".join(map(str, oids)),),
        )
        facts["type_names"] = {int(o): name for o, name in cur.fetchall()}
    return facts
