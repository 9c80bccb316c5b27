"""Partitions: a catalog cadence becomes a Dagster time-window partitions definition, and a key its window.

Dagster's definition is the one source of truth for keys and windows, inside and outside a run.
Windows are half-open and in UTC; only completed windows are partitions.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DailyPartitionsDefinition,
    FreshnessPolicy,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from snapshot_platform.catalog import PartitionsSpec
from snapshot_platform.sources.base import Window

_CLASSES = {
    "hourly": HourlyPartitionsDefinition,
    "daily": DailyPartitionsDefinition,
    "weekly": WeeklyPartitionsDefinition,
    "monthly": MonthlyPartitionsDefinition,
}


def partitions_def(spec: PartitionsSpec) -> TimeWindowPartitionsDefinition:
    cls = _CLASSES[spec.cadence]
    kwargs = {"start_date": spec.start, "timezone": "UTC"}
    if spec.end is not None:
        kwargs["end_date"] = spec.end
    return cls(**kwargs)


class PartitionKeyError(ValueError):
    """A partition key that is not one of the catalog's partitions; the message names the expected form."""


_HUMAN_FORMAT = {"%Y-%m-%d-%H:%M": "YYYY-MM-DD-HH:MM", "%Y-%m-%d": "YYYY-MM-DD"}


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def window_for(
    spec: PartitionsSpec, partition_key: str, *, allow_open: bool = False, now: dt.datetime | None = None
) -> Window:
    """The window of ``partition_key``.

    A :class:`PartitionKeyError` (a ValueError) names the expected form when the key is malformed or
    not canonical (``2024-1-5`` for ``2024-01-05``, a weekly key that is not the week's first day),
    before the catalog's ``start`` or past its ``end``, or when its window has not closed yet at
    ``now`` (default: the current time) unless ``allow_open``.
    """
    pdef = partitions_def(spec)
    form = _HUMAN_FORMAT.get(pdef.fmt, pdef.fmt)
    example = pdef.get_first_partition_key()
    try:
        tw = pdef.time_window_for_partition_key(partition_key)
    except Exception:  # Dagster raises assorted errors for a malformed key
        raise PartitionKeyError(
            f"{partition_key!r} is not a {spec.cadence} partition key: expected {form} (like {example!r})"
        ) from None
    canonical = tw.start.strftime(pdef.fmt)
    if canonical != partition_key:
        raise PartitionKeyError(
            f"{partition_key!r} is not a canonical {spec.cadence} partition key: expected {form}, the "
            f"start of a {spec.cadence} window (this key would be read as {canonical!r})"
        )
    start, end = _utc(tw.start), _utc(tw.end)
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
    current = _utc(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    if end > current and not allow_open:
        raise PartitionKeyError(
            f"partition {partition_key!r} covers [{start.isoformat()}, {end.isoformat()}), which has not "
            f"closed yet: its rows may still change. Snapshot it after {end.isoformat()}, or ask for the "
            "open window explicitly (snapshot-platform snapshot --allow-open-window)"
        )
    return Window(start, end)


_PERIOD = {
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(days=7),
    "monthly": dt.timedelta(days=31),
}


def freshness_policy(cadence: str) -> FreshnessPolicy:
    """Stale (warn) a quarter period after a run was due, failed after two periods without one."""
    period = _PERIOD[cadence]
    return FreshnessPolicy.time_window(fail_window=2 * period, warn_window=period + period / 4)
