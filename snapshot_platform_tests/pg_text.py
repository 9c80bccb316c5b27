"""PostgreSQL's text of values, the ground truth of the type torture tests (engines/test_types_postgres.py,
engines/test_types_redshift.py): the server's own text output of each cell, fetched with every type
loaded as plain text, and independent renderers of Parquet cells into that text.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
import pyarrow as pa
from psycopg.adapt import Loader
from psycopg.postgres import types as builtin_types


# ---------------------------------------------------------------- the server's text (ground truth)


class _RawText(Loader):
    def load(self, data: Any) -> str:
        return bytes(data).decode("utf-8")


def server_text(url: str, table: str, exprs: dict[str, str]) -> dict[str, list[str | None]]:
    """Per column, the server's text output of each row's value (ordered by id), as psql shows it."""
    with psycopg.connect(url, autocommit=True) as conn:
        for info in builtin_types:  # every value as its output function's text, nothing parsed
            conn.adapters.register_loader(info.oid, _RawText)
            if getattr(info, "array_oid", 0):
                conn.adapters.register_loader(info.array_oid, _RawText)
        conn.execute("SET TimeZone TO 'UTC'")
        conn.execute("SET DateStyle TO 'ISO, MDY'")
        items = ", ".join(f"{e} AS \"{c}\"" for c, e in exprs.items())
        rows = conn.execute(f"SELECT {items} FROM {table} ORDER BY id").fetchall()
    return {c: [r[i] for r in rows] for i, c in enumerate(exprs)}


# ---------------------------------------------------------------- Parquet values in PostgreSQL's text


def civil_from_days(z: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def pg_date(days: int) -> tuple[str, str]:
    y, m, d = civil_from_days(days)
    return (f"{y:04d}-{m:02d}-{d:02d}", "") if y > 0 else (f"{1 - y:04d}-{m:02d}-{d:02d}", " BC")


def pg_time(us: int) -> str:
    s, frac = divmod(us, 1_000_000)
    text = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    return text + (f".{frac:06d}".rstrip("0") if frac else "")


def pg_timestamp(us: int, zone: bool) -> str:
    days, rest = divmod(us, 86_400_000_000)
    date, era = pg_date(days)
    return f"{date} {pg_time(rest)}{'+00' if zone else ''}{era}"


def pg_float(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def quote_element(text: str) -> str:
    if text == "" or text.upper() == "NULL" or any(ch in text for ch in '{}",\\') or any(ch.isspace() for ch in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(value: pa.Scalar) -> str | None:
    """A Parquet cell as PostgreSQL writes the value as text (ISO dates, UTC, hex bytea)."""
    t = value.type
    if not value.is_valid:
        return None
    if pa.types.is_date32(t):
        date, era = pg_date(pa.array([value.value], t).view(pa.int32())[0].as_py())
        return date + era
    if pa.types.is_timestamp(t):
        return pg_timestamp(pa.array([value.value], t).view(pa.int64())[0].as_py(), t.tz is not None)
    if pa.types.is_time64(t):
        return pg_time(pa.array([value.value], t).view(pa.int64())[0].as_py())
    if pa.types.is_list(t):
        items = []
        for item in value.values:
            text = render(item)
            items.append("NULL" if text is None else quote_element(text))
        return "{" + ",".join(items) + "}"
    v = value.as_py()
    if pa.types.is_boolean(t):
        return "t" if v else "f"
    if pa.types.is_floating(t):
        return pg_float(v)
    if pa.types.is_decimal(t):
        return format(v, "f")
    if pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
        return str(uuid.UUID(bytes=v))
    if pa.types.is_binary(t):
        return "\\x" + v.hex()
    return str(v)


def mismatches(table: pa.Table, truth: dict[str, list[str | None]]) -> list[str]:
    """Every cell whose Parquet value differs from the server's text of it (floats: as numbers)."""
    found = []
    for name, expected in truth.items():
        column = table.column(name).combine_chunks()
        assert len(column) == len(expected), name
        for row, (cell, text) in enumerate(zip(column, expected)):
            if pa.types.is_floating(column.type) and cell.is_valid and text is not None:
                got, want = cell.as_py(), float(text)
                if pa.types.is_float32(column.type):
                    want = pa.scalar(want, pa.float32()).as_py()
                same = got == want or (math.isnan(got) and math.isnan(want))
                if not same or math.copysign(1, got) != math.copysign(1, want):
                    found.append(f"{name} row {row}: {got!r} != {text!r}")
                continue
            got_text = render(cell)
            if got_text != text:
                found.append(f"{name} row {row}: {got_text!r} != {text!r}")
    return found
