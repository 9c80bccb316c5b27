"""Change detection: which recent partitions changed at the source since their latest version.

A snapshot with a ``change_probe`` records the probe's row (its ``source_fingerprint``) with every
version, read in the same consistent session as the data. :func:`changed_partitions` runs the probe
again, now, for the last ``lookback`` partitions that have a version, and returns those whose
fingerprint differs from their latest version's (its newest sidecar's, store/fingerprints.py, else
its manifest's). ``snapshot-platform changed`` prints them; the change sensor
(orchestration/change_sensors.py) requests their re-snapshots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from snapshot_platform.catalog import SnapshotSpec
from snapshot_platform.catalog.windows import window_for
from snapshot_platform.sources import Source
from snapshot_platform.store import SnapshotStore, fingerprints


@dataclass(frozen=True)
class Change:
    partition: str
    version: str  # the partition's latest version
    recorded: dict[str, Any] | None  # its fingerprint (None: recorded before the probe existed)
    current: dict[str, Any]  # the probe's row now

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def changed_partitions(spec: SnapshotSpec, source: Source, store: SnapshotStore, name: str) -> list[Change]:
    """The partitions among the last ``change_probe.lookback`` with a version whose fingerprint moved."""
    if spec.change_probe is None:
        raise ValueError(f"snapshot {name} has no change_probe in the catalog")
    with_versions = [(p, vs[-1]) for p in store.partitions(name) if (vs := store.versions(name, p))]
    found = []
    for partition, latest in with_versions[-spec.change_probe.lookback:]:
        window = window_for(spec.partitions, partition, allow_open=True)
        current = source.fingerprint(spec.change_probe.query, window)
        recorded = fingerprints.current(store, latest)
        if recorded != current:
            found.append(Change(partition, latest.version, recorded, current))
    return found
