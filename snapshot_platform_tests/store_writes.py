"""What the store tests and the CLI tests share (unit/test_store.py, integration/test_store_processes.py,
integration/test_cli.py, integration/test_retention.py, integration/test_trust.py): tables to publish, the manifest fields a
caller of SnapshotStore.publish supplies, a version rewritten in the layout before shared parts, and a
writer process to kill mid-stream."""

from __future__ import annotations

import textwrap
from typing import Any

import pyarrow as pa

from snapshot_platform.store import SnapshotStore, sha256_text

ASSET = "customer_data"
PARTITION = "2024-01-01"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
QUERY = "SELECT * FROM customers WHERE d >= :partition_start AND d < :partition_end"


def make_table(n: int, start: int = 0, salt: str = "") -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {"id": ids, "name": [f"customer-{i}{salt}" for i in ids], "score": [i * 0.5 for i in ids]},
        schema=SCHEMA,
    )


def batches_of(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=size)


def publish(store: SnapshotStore, table: pa.Table, batch_rows: int = 1000, asset: str = ASSET,
            partition: str = PARTITION, **fields: Any):
    return store.publish(asset, partition, table.schema, batches_of(table, batch_rows), manifest_fields(**fields))


def old_layout(store: SnapshotStore, m: Any) -> Any:
    """Rewrite the published version ``m`` as releases before shared parts wrote it: format 2, its
    parts copied into its own folder as ``part-00000.parquet`` ..., ``files[].path`` relative to
    that folder (the version id is the same: it digests the schema and the parts' hashes). The
    shared copies stay where they are. Returns the manifest read back."""
    import shutil
    from pathlib import Path

    from snapshot_platform.store import MANIFEST_NAME, Manifest

    folder = Path(str(store.version_dir(m.asset, m.partition, m.version)))
    files = []
    for i, f in enumerate(m.files):
        name = f"part-{i:05d}.parquet"
        shutil.copyfile(str(store.part_path(m, f)), folder / name)
        files.append({**f.as_dict(), "path": name})
    doc = {**m.as_dict(), "format_version": 2, "files": files,
           "writer": {k: v for k, v in (m.writer or {}).items() if not k.startswith("part_") or k == "part_rows"}}
    (folder / MANIFEST_NAME).write_bytes(Manifest.from_dict(doc, where="old layout").to_json())
    return store.read_manifest(m.asset, m.partition, m.version)


def manifest_fields(**override: Any) -> dict[str, Any]:
    """The manifest fields only the caller knows, shaped like capture.take_snapshot's."""
    fields = {
        "window": {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"},
        "query": QUERY,
        "query_sha256": sha256_text(QUERY),
        "params": {"partition_start": "2024-01-01T00:00:00+00:00", "partition_end": "2024-01-02T00:00:00+00:00"},
        "key": ["id"],
        "source": {"name": "test_db", "kind": "sqlite", "host": None, "database": "test.sqlite"},
        "source_state": {"engine": "sqlite", "data_version": 1},
        "dagster_run_id": None,
        "code_version": "0123456789ab",
        "library_versions": {"python": "3", "pyarrow": pa.__version__},
    }
    fields.update(override)
    return fields


_SLOW_WRITER = textwrap.dedent(
    """
    import json, sys, time
    import pyarrow as pa
    from snapshot_platform.store import SnapshotStore, WriterSettings

    root = sys.argv[1]
    fields = json.loads(sys.argv[2])
    schema = pa.schema([("id", pa.int64()), ("payload", pa.string())])

    def stream():
        for i in range(100_000):
            ids = pa.array(range(i * 500, (i + 1) * 500), pa.int64())
            yield pa.record_batch([ids, pa.array([f"row-{j}-" + "x" * 40 for j in range(500)])], schema=schema)
            if i == 20:
                print("streaming", flush=True)
            time.sleep(0.005)

    store = SnapshotStore(root, settings=WriterSettings(row_group_rows=1000, part_rows=4000))
    store.publish("customer_data", "2024-01-01", schema, stream(), fields)
    print("published", flush=True)
    """
)
