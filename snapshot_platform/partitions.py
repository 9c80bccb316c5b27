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


def window_for(spec: PartitionsSpec, partition_key: str) -> Window:
    """The window of ``partition_key``; a ValueError names a key that is not one of the partitions."""
    pdef = partitions_def(spec)
    try:
        tw = pdef.time_window_for_partition_key(partition_key)
    except Exception:  # Dagster raises assorted errors for a malformed key
        raise ValueError(
            f"{partition_key!r} is not a {spec.cadence} partition key (expected like "
            f"{pdef.get_first_partition_key()!r})"
        ) from None
    if tw.start < spec.start.replace(tzinfo=dt.timezone.utc):
        raise ValueError(f"partition {partition_key!r} is before the catalog's start {spec.start:%Y-%m-%d}")
    return Window(tw.start.astimezone(dt.timezone.utc), tw.end.astimezone(dt.timezone.utc))


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
