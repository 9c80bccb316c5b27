"""A partition key of the catalog → its window, without importing Dagster.

The arithmetic is Dagster's time-window partitions' (orchestration/partitions.py builds those for
the assets and schedules): in UTC, a partition starts on a tick of its cadence (hourly: every hour;
daily: midnight; weekly: Sunday midnight; monthly: the 1st at midnight), a key is its start in the
cadence's format, a key between two ticks names the next tick, and a window is half-open
``[tick, next tick)``. unit/test_partition_windows.py pins this equal to Dagster's definitions for
every cadence. Importing Dagster takes about half a second and 30 MB; the CLI's ``snapshot`` (and
every command that only needs a window) does without it.
"""

from __future__ import annotations

import datetime as dt

from snapshot_platform.catalog.specs import PartitionsSpec
from snapshot_platform.sources.base import Window

FORMATS = {"hourly": "%Y-%m-%d-%H:%M", "daily": "%Y-%m-%d", "weekly": "%Y-%m-%d", "monthly": "%Y-%m-%d"}
_HUMAN_FORMAT = {"%Y-%m-%d-%H:%M": "YYYY-MM-DD-HH:MM", "%Y-%m-%d": "YYYY-MM-DD"}
_SUNDAY = 6


class PartitionKeyError(ValueError):
    """A partition key that is not one of the catalog's partitions; the message names the expected form."""


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def next_tick(t: dt.datetime, cadence: str) -> dt.datetime:
    """The tick after the tick ``t``: the end of the window that starts at ``t``."""
    if cadence == "hourly":
        return t + dt.timedelta(hours=1)
    if cadence == "daily":
        return t + dt.timedelta(days=1)
    if cadence == "weekly":
        return t + dt.timedelta(days=7)
    return t.replace(year=t.year + t.month // 12, month=t.month % 12 + 1)


def tick_at_or_after(t: dt.datetime, cadence: str) -> dt.datetime:
    """The first partition start at or after the UTC time ``t``."""
    tick = t.replace(minute=0, second=0, microsecond=0)
    if cadence != "hourly":
        tick = tick.replace(hour=0)
    if cadence == "monthly":
        tick = tick.replace(day=1)
    if tick < t:
        tick = next_tick(tick, "daily" if cadence == "weekly" else cadence)
    if cadence == "weekly":
        tick += dt.timedelta(days=(_SUNDAY - tick.weekday()) % 7)
    return tick


def first_partition_key(spec: PartitionsSpec, now: dt.datetime) -> str | None:
    """The first partition's key, as Dagster's ``get_first_partition_key``: None until its window has
    closed at ``now`` (or when it would end after the catalog's ``end``)."""
    first = tick_at_or_after(_utc(spec.start), spec.cadence)
    end = next_tick(first, spec.cadence)
    if end > now or (spec.end is not None and end > _utc(spec.end)):
        return None
    return first.strftime(FORMATS[spec.cadence])


def window_for(
    spec: PartitionsSpec, partition_key: str, *, allow_open: bool = False, now: dt.datetime | None = None
) -> Window:
    """The window of ``partition_key``.

    A :class:`PartitionKeyError` (a ValueError) names the expected form when the key is malformed or
    not canonical (``2024-1-5`` for ``2024-01-05``, a weekly key that is not the week's first day),
    before the catalog's ``start`` or past its ``end``, or when its window has not closed yet at
    ``now`` (default: the current time) unless ``allow_open``.
    """
    current = _utc(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    fmt = FORMATS[spec.cadence]
    form = _HUMAN_FORMAT.get(fmt, fmt)
    example = first_partition_key(spec, dt.datetime.now(dt.timezone.utc))  # as Dagster's: today's
    try:
        parsed = dt.datetime.strptime(partition_key, fmt).replace(tzinfo=dt.timezone.utc)
    except (ValueError, TypeError):
        raise PartitionKeyError(
            f"{partition_key!r} is not a {spec.cadence} partition key: expected {form} (like {example!r})"
        ) from None
    start = tick_at_or_after(parsed, spec.cadence)
    end = next_tick(start, spec.cadence)
    canonical = start.strftime(fmt)
    if canonical != partition_key:
        raise PartitionKeyError(
            f"{partition_key!r} is not a canonical {spec.cadence} partition key: expected {form}, the "
            f"start of a {spec.cadence} window (this key would be read as {canonical!r})"
        )
    if start < _utc(spec.start):
        raise PartitionKeyError(
            f"partition {partition_key!r} is before the catalog's start {spec.start:%Y-%m-%d}: expected a "
            f"{spec.cadence} key ({form}) from {example!r}"
        )
    if spec.end is not None and end > _utc(spec.end):
        raise PartitionKeyError(
            f"partition {partition_key!r} ends after the catalog's end {spec.end:%Y-%m-%d}: expected a "
            f"{spec.cadence} key ({form}) from {example!r} whose window ends by then"
        )
    if end > current and not allow_open:
        raise PartitionKeyError(
            f"partition {partition_key!r} covers [{start.isoformat()}, {end.isoformat()}), which has not "
            f"closed yet: its rows may still change. Snapshot it after {end.isoformat()}, or ask for the "
            "open window explicitly (snapshot-platform snapshot --allow-open-window)"
        )
    return Window(start, end)
