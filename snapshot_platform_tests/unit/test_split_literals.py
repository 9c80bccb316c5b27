"""What a parallel read puts into SQL text (COPY takes no parameters): split values only as typed
literals of the program's own ints, dates and datetimes, checked to one form; the range predicates;
the exported snapshot id only when it has the server's form."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from snapshot_platform.sources import SourceError
from snapshot_platform.sources.postgres_parallel import range_query, snapshot_id, split_literal

UTC = dt.timezone.utc


@pytest.mark.parametrize("value, pg_type, literal", [
    (1_250_000, "int8", "INT8 '1250000'"),
    (-32768, "int2", "INT2 '-32768'"),
    (7, "int4", "INT4 '7'"),
    (dt.date(2024, 3, 10), "date", "DATE '2024-03-10'"),
    (dt.date(999, 1, 2), "date", "DATE '0999-01-02'"),
    (dt.datetime(2024, 3, 10, 1, 2, 3, 45), "timestamp", "TIMESTAMP '2024-03-10 01:02:03.000045'"),
    (dt.datetime(2024, 3, 10, 1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=2))), "timestamptz",
     "TIMESTAMPTZ '2024-03-09 23:02:03.000000+00'"),
])
def test_program_values_render_as_typed_literals(value: Any, pg_type: str, literal: str) -> None:
    assert split_literal(value, pg_type) == literal


@pytest.mark.parametrize("value, pg_type", [
    ("1'; DROP TABLE t; --", "int8"),  # text never, whatever it holds
    ("2024-03-10", "date"),
    (True, "int4"),  # a bool is an int to Python, not to the key
    (1.5, "int8"),
    (dt.datetime(2024, 3, 10), "date"),  # a datetime is a date to Python
    (dt.datetime(2024, 3, 10, tzinfo=UTC), "timestamp"),
    (dt.datetime(2024, 3, 10), "timestamptz"),
    ("abc", "text"),
    (1, "numeric"),
])
def test_anything_else_is_refused(value: Any, pg_type: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        split_literal(value, pg_type)


def test_ranges_cover_every_row_once_with_nulls_in_the_last() -> None:
    bound = "SELECT * FROM t"
    assert range_query(bound, "k", None, "INT8 '10'").endswith('WHERE snapshot_range."k" < INT8 \'10\'')
    assert range_query(bound, "k", "INT8 '10'", "INT8 '20'").endswith(
        'WHERE snapshot_range."k" >= INT8 \'10\' AND snapshot_range."k" < INT8 \'20\'')
    assert range_query(bound, 'we"ird', "INT8 '20'", None).endswith(
        'WHERE (snapshot_range."we""ird" >= INT8 \'20\' OR snapshot_range."we""ird" IS NULL)')


@pytest.mark.parametrize("value", ["00000003-0000001B-1", "00000003-1A"])
def test_a_snapshot_id_of_the_servers_form_passes(value: str) -> None:
    assert snapshot_id(value) == value


@pytest.mark.parametrize("value", ["", "0000-1'; SELECT 1; --", "00000003-0000001b-1", None, 3, "a b-1"])
def test_anything_else_is_not_a_snapshot_id(value: Any) -> None:
    with pytest.raises(SourceError):
        snapshot_id(value)
