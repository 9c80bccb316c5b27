"""``snapshot_<name>_change_sensor``: re-snapshot exactly the partitions whose source changed.

One sensor per snapshot with a ``change_probe`` (shipped stopped: switch it on in the UI). Each tick
runs the probe for the last ``lookback`` partitions with a version (changes.py) and requests a run of
``snapshots/<name>`` for each partition whose fingerprint moved; the runs queue in the source's pool
like any snapshot, and the retrain automation picks up the new versions. The run key holds the new
fingerprint's digest: the same change is requested once, a further change again.
"""

from __future__ import annotations

import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorDefinition, SensorEvaluationContext, SkipReason, sensor

from snapshot_platform.catalog import Catalog
from snapshot_platform.orchestration.metadata import snapshot_key
from snapshot_platform.orchestration.resources import SnapshotStoreResource

CHANGE_SENSOR_INTERVAL_S = 300


def change_sensor_name(name: str) -> str:
    return f"snapshot_{name}_change_sensor"


def build_change_sensors(catalog: Catalog) -> list[SensorDefinition]:
    return [_change_sensor(catalog, name) for name, spec in catalog.snapshots.items() if spec.change_probe is not None]


def _change_sensor(catalog: Catalog, name: str) -> SensorDefinition:
    spec = catalog.snapshots[name]
    key = snapshot_key(name)

    @sensor(
        name=change_sensor_name(name),
        asset_selection=[key],
        default_status=DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=CHANGE_SENSOR_INTERVAL_S,
        description=f"Re-snapshots the partitions of {name} whose change_probe fingerprint moved "
        f"(the last {spec.change_probe.lookback} with a version)",
    )
    def _sensor(context: SensorEvaluationContext, snapshot_store: SnapshotStoreResource):  # type: ignore[no-untyped-def]
        from snapshot_platform.changes import changed_partitions
        from snapshot_platform.sources import make_source

        source = make_source(spec.source, catalog.sources[spec.source])
        found = changed_partitions(spec, source, snapshot_store.get_store(), name)
        if not found:
            return SkipReason(f"no partition of {name} changed at the source")
        requests = []
        for c in found:
            digest = hashlib.sha256(json.dumps(c.current, sort_keys=True).encode()).hexdigest()[:16]
            context.log.info(f"{name}/{c.partition}: fingerprint moved since version {c.version}")
            requests.append(RunRequest(run_key=f"{name}:{c.partition}:{digest}", partition_key=c.partition,
                                       asset_selection=[key], tags={"snapshot_platform/trigger": "source_changed"}))
        return requests

    return _sensor
