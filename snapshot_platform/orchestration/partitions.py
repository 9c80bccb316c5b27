"""Partitions: a catalog cadence becomes a Dagster time-window partitions definition, and a key its window.

Dagster's definition is the source of truth for keys and windows; outside a run, ``window_for``
(catalog/windows.py) computes the same windows without importing Dagster. Windows are half-open and
in UTC; only completed windows are partitions.
"""

from __future__ import annotations

import datetime as dt
import functools

from dagster import (
    DailyPartitionsDefinition,
    FreshnessPolicy,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from snapshot_platform.catalog import PartitionsSpec
# a key's window without Dagster (the CLI's snapshot need not import it), pinned equal to the
# definitions below by unit/test_partition_windows.py
from snapshot_platform.catalog.windows import PartitionKeyError, window_for  # noqa: F401 (re-exported)

_CLASSES = {
    "hourly": HourlyPartitionsDefinition,
    "daily": DailyPartitionsDefinition,
    "weekly": WeeklyPartitionsDefinition,
    "monthly": MonthlyPartitionsDefinition,
}


def partitions_def(spec: PartitionsSpec) -> TimeWindowPartitionsDefinition:
    """The partitions definition of a cadence, start and end: one shared instance for each."""
    return _partitions_def(spec.cadence, spec.start, spec.end)


@functools.lru_cache(maxsize=None)
def _partitions_def(cadence: str, start: dt.datetime,
                    end: dt.datetime | None) -> TimeWindowPartitionsDefinition:
    kwargs = {"start_date": start, "timezone": "UTC"}
    if end is not None:
        kwargs["end_date"] = end
    return _CLASSES[cadence](**kwargs)


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
