"""catalog/windows.py computes a partition key's window without Dagster (the CLI's ``snapshot`` need
not import it): here pinned equal to Dagster's time-window partitions definitions
(orchestration/partitions.py), key by key, for every cadence, aligned and unaligned starts and keys."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from snapshot_platform.catalog import PartitionsSpec
from snapshot_platform.catalog.windows import first_partition_key, window_for
from snapshot_platform.orchestration.partitions import partitions_def

UTC = dt.timezone.utc
STARTS = [dt.datetime(2023, 12, 30), dt.datetime(2024, 1, 3, 5, 30), dt.datetime(2024, 2, 29, 23, 59)]


def _times(start: dt.datetime, count: int, step: dt.timedelta) -> list[dt.datetime]:
    t0 = start.replace(tzinfo=UTC) - 40 * step  # some keys before the start, most after
    return [t0 + i * step for i in range(count)]


@pytest.mark.parametrize("cadence, step", [
    ("hourly", dt.timedelta(minutes=23)), ("daily", dt.timedelta(hours=5)),
    ("weekly", dt.timedelta(hours=17)), ("monthly", dt.timedelta(days=3, hours=7)),
])
@pytest.mark.parametrize("start", STARTS)
def test_windows_and_keys_equal_dagsters(cadence, step, start):
    spec = PartitionsSpec(cadence=cadence, start=start)
    pdef = partitions_def(spec)
    assert first_partition_key(spec, dt.datetime.now(UTC)) == pdef.get_first_partition_key()
    compared = set()
    for t in _times(start, 400, step):
        raw = t.strftime(pdef.fmt)
        for key in {raw, pdef.time_window_for_partition_key(raw).start.strftime(pdef.fmt)}:
            tw = pdef.time_window_for_partition_key(key)
            if tw.start.strftime(pdef.fmt) != key or tw.start < start.replace(tzinfo=UTC):
                with pytest.raises(ValueError):  # not canonical, or before the start
                    window_for(spec, key, allow_open=True)
                continue
            ours = window_for(spec, key, allow_open=True)
            assert (ours.start, ours.end) == (tw.start, tw.end), key
            compared.add(key)
    assert len(compared) >= 20


@pytest.mark.parametrize("cadence, key", [
    ("daily", "2024-3-5"), ("daily", "2024-02-30"), ("hourly", "2024-03-05"), ("weekly", "2024-03-05"),
    ("monthly", "2024-03-05"), ("hourly", "2024-03-05-01:30"), ("daily", "2024-03-05 "), ("daily", "x"),
])
def test_malformed_and_unaligned_keys_are_refused_as_dagster_reads_them(cadence, key):
    spec = PartitionsSpec(cadence=cadence, start=dt.datetime(2024, 1, 1))
    pdef = partitions_def(spec)
    try:
        canonical = pdef.time_window_for_partition_key(key).start.strftime(pdef.fmt)
    except ValueError:
        canonical = None
    with pytest.raises(ValueError) as info:
        window_for(spec, key, allow_open=True)
    if canonical is None:
        assert "is not a" in str(info.value) and "canonical" not in str(info.value)
    else:
        assert f"would be read as {canonical!r}" in str(info.value)


def test_the_window_module_imports_no_dagster():
    code = ("import sys, snapshot_platform.catalog.windows, snapshot_platform.cli.snapshots, "
            "snapshot_platform.changes; print('dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
