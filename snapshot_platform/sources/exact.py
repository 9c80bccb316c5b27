"""Exact or a clear error: a driver's batch in the snapshot's schema, column by column.

Used by the BigQuery and Snowflake sources. The snapshot's Arrow schema is derived from the
engine's result metadata before any row is read; every batch a driver hands over is checked against
it here. A column whose Arrow type already matches passes untouched (the same bytes as before). A
column of another Arrow type is cast only when the cast cannot change a value: integer widths and
decimal precisions (Arrow's safe cast fails on overflow), timestamp units (it fails on overflow and
on a lost fraction). Casts that could change a value are refused: a float into a decimal or an
integer, anything but text into text, anything but bytes into bytes. A refusal, and a decimal that
does not fit its declared precision, raise :class:`SourceError` naming the source, the column, its
database type and what to do; the snapshot then fails before anything is published.
"""

from __future__ import annotations

import pyarrow as pa

from snapshot_platform.sources.base import SourceError, plain_schema


def _text_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _bytes_like(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _has_decimal(t: pa.DataType) -> bool:
    if pa.types.is_decimal(t):
        return True
    return any(_has_decimal(t.field(i).type) for i in range(t.num_fields))


def _may_change_values(src: pa.DataType, dst: pa.DataType) -> bool:
    """True where an Arrow cast from ``src`` to ``dst`` could give a different value without failing."""
    if _text_like(dst):
        return not _text_like(src)
    if _bytes_like(dst):
        return not _bytes_like(src)
    if pa.types.is_decimal(dst) or pa.types.is_integer(dst):
        return not (pa.types.is_integer(src) or pa.types.is_decimal(src))
    if pa.types.is_floating(dst):
        return not pa.types.is_floating(src)
    if pa.types.is_timestamp(dst):
        # a naive wall clock is not an instant: only the unit may change, never the zone
        return not (pa.types.is_timestamp(src) and bool(src.tz) == bool(dst.tz))
    if pa.types.is_time(dst):
        return not pa.types.is_time(src)
    if pa.types.is_date(dst):
        return not pa.types.is_date(src)
    if pa.types.is_boolean(dst):
        return not pa.types.is_boolean(src)
    if pa.types.is_struct(dst):
        if not pa.types.is_struct(src) or src.num_fields != dst.num_fields:
            return True
        return any(src.field(i).name != dst.field(i).name or _may_change_values(src.field(i).type, dst.field(i).type)
                   for i in range(dst.num_fields))
    if pa.types.is_list(dst) or pa.types.is_large_list(dst):
        return not (pa.types.is_list(src) or pa.types.is_large_list(src)) or _may_change_values(
            src.value_type, dst.value_type)
    return True


def conform_exact(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    source: str,
    engine: str,
    source_types: dict[str, str],
    hint: str,
) -> pa.RecordBatch:
    """``batch`` in ``schema``, every value exact, or a :class:`SourceError` naming the column.

    ``hint`` says what to do in the engine's SQL; ``{column}`` and ``{type}`` are filled in.
    """
    batch = pa.RecordBatch.from_arrays(list(batch.columns), schema=plain_schema(batch.schema))
    if batch.num_columns != len(schema):
        raise SourceError(f"source {source}: the {engine} result has {batch.num_columns} columns, "
                          f"its metadata {len(schema)}")
    columns = []
    for column, want in zip(batch.columns, schema):
        db_type = source_types.get(want.name, "?")

        def fail(why: str) -> SourceError:
            return SourceError(
                f"source {source}: column {want.name} ({engine} {db_type}) {why}; "
                + hint.format(column=want.name, type=db_type),
                code="inexact_type",
            )

        if not column.type.equals(want.type):
            if _may_change_values(column.type, want.type):
                raise fail(f"arrived as Arrow {column.type}, which cannot be kept exactly as {want.type}")
            try:
                column = column.cast(want.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise fail(f"has a value that does not fit Arrow {want.type} ({exc})") from None
        if _has_decimal(want.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise fail(f"has a value that does not fit Arrow {want.type} ({exc})") from None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
