"""The PostgreSQL source's window bounds as typed literals (sources/postgres.py ``window_sql``).

COPY, through which the rows travel, takes no bind parameters, so the bounds are rendered into the
SQL: only from the program's own timezone-aware datetimes, only as ``TIMESTAMPTZ '<digits>'``, and
nothing else of the text changes. What the server receives in a real read: engines/test_postgres.py.
"""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_platform.sources import Window
from snapshot_platform.sources.postgres import timestamptz_literal, window_sql

UTC = dt.timezone.utc
WINDOW = Window(dt.datetime(2024, 3, 10, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC))
START = "TIMESTAMPTZ '2024-03-10 00:00:00.000000+00'"
END = "TIMESTAMPTZ '2024-03-11 00:00:00.000000+00'"


def test_placeholders_become_the_windows_typed_literals_and_nothing_else_changes():
    query = ("SELECT id, ':partition_start' AS s, x::date FROM \":partition_end\" -- :partition_end\n"
             "WHERE day >= :partition_start AND day < :partition_end /* :partition_start */;  ")
    assert window_sql(query, WINDOW) == (
        "SELECT id, ':partition_start' AS s, x::date FROM \":partition_end\" -- :partition_end\n"
        f"WHERE day >= {START} AND day < {END} /* :partition_start */")


def test_bounds_are_rendered_in_utc_to_the_microsecond():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    t = dt.datetime(2024, 3, 11, 1, 2, 3, 4, tzinfo=plus_two)
    assert timestamptz_literal(t) == "TIMESTAMPTZ '2024-03-10 23:02:03.000004+00'"
    assert timestamptz_literal(dt.datetime(1, 1, 1, tzinfo=UTC)) == "TIMESTAMPTZ '0001-01-01 00:00:00.000000+00'"


class _Hostile(int):
    def __format__(self, spec: str) -> str:
        return "2024'; DROP TABLE t; --"


class _HostileDatetime(dt.datetime):
    """A datetime whose fields would render as SQL: the rendered text is checked, not trusted."""

    def astimezone(self, tz=None):
        return self

    @property
    def year(self):
        return _Hostile(2024)


@pytest.mark.parametrize("value", [
    "2024-03-10 00:00:00+00",  # text is never rendered, whatever it holds
    "2024-03-10'; DROP TABLE t; --",
    dt.date(2024, 3, 10),
    dt.datetime(2024, 3, 10),  # naive: no instant
])
def test_only_a_timezone_aware_datetime_is_rendered(value):
    with pytest.raises(TypeError, match="timezone-aware datetime"):
        timestamptz_literal(value)


def test_a_datetime_whose_fields_do_not_render_as_digits_is_refused():
    hostile = _HostileDatetime(2024, 3, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="did not render as a timestamp literal"):
        timestamptz_literal(hostile)
    with pytest.raises(ValueError):
        window_sql("SELECT 1 WHERE d >= :partition_start AND d < :partition_end",
                   Window(hostile, dt.datetime(2024, 3, 11, tzinfo=UTC)))


def test_a_parameter_other_than_the_windows_is_never_spelled():
    with pytest.raises(ValueError, match="unknown query parameter :snapshot_time"):
        window_sql("SELECT 1 WHERE d < :snapshot_time", WINDOW)
