"""The snapshot store, without any database: Arrow batches in, write-once hash-verified versions out.

Covers docs/architecture.md (layout, manifest, content-derived version ids, publish protocol):
a reader never sees a partial snapshot, versions are write-once (also under concurrent publishers),
a flipped byte is caught, hostile names cannot escape the storage root.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from snapshot_platform.store import (
    MANIFEST_NAME,
    IntegrityError,
    ManifestError,
    SnapshotNotFound,
    SnapshotStore,
    WriterSettings,
    sha256_text,
)
from snapshot_platform_tests.store_writes import (
    _SLOW_WRITER,
    ASSET,
    PARTITION,
    QUERY,
    SCHEMA,
    batches_of,
    make_table,
    manifest_fields,
    old_layout,
    publish,
)
from snapshot_platform.store.manifest import (
    FORMAT_VERSION,
    REQUIRED_FIELDS,
    CheckOutcome,
    FileEntry,
    Manifest,
)

SMALL = WriterSettings(row_group_rows=1000, part_rows=3000)
FIXED = WriterSettings(row_group_rows=1000, part_rows=3000, part_min_rows=3000)  # parts of exactly 3,000 rows

STORE_OWNED = ("format_version", "asset", "partition", "version", "created_at", "row_count", "files", "schema")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every published file under root (staging and retention's touch markers excluded): relative
    path -> (mtime_ns, size)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in (".staging", ".touched"):
            st = p.stat()
            out[str(rel)] = (st.st_mtime_ns, st.st_size)
    return out


def part_file(store: SnapshotStore, m: Manifest, i: int = 0) -> Path:
    """The stored file of ``m``'s part ``i`` (shared under <root>/parts/ since format 3)."""
    return Path(str(store.part_path(m, m.files[i])))


def staging_leftovers(root: Path) -> list[Path]:
    staging = root / ".staging"
    return list(staging.iterdir()) if staging.exists() else []


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def store(root: Path) -> SnapshotStore:
    return SnapshotStore(root)


# ------------------------------------------------------------------ publishing


def test_publish_writes_a_complete_readable_manifest(store, root):
    table = make_table(2500)
    result = publish(store, table)
    assert result.created is True
    folder = root / "snapshots" / ASSET / PARTITION / result.version
    assert result.uri == folder.resolve().as_uri()
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]  # the parts are shared, by content

    on_disk = json.loads((folder / MANIFEST_NAME).read_text())
    assert on_disk == json.loads(json.dumps(result.manifest.as_dict(), default=str))
    for field in REQUIRED_FIELDS:
        assert field in on_disk, field
    assert on_disk["format_version"] == FORMAT_VERSION == 3
    assert (on_disk["asset"], on_disk["partition"], on_disk["version"]) == (ASSET, PARTITION, result.version)
    assert on_disk["row_count"] == 2500
    assert on_disk["window"] == manifest_fields()["window"]
    assert on_disk["query_sha256"] == sha256_text(QUERY)
    assert on_disk["dagster_run_id"] is None
    assert on_disk["schema"] == [
        {"name": "id", "type": "int64", "nullable": True},
        {"name": "name", "type": "string", "nullable": True},
        {"name": "score", "type": "double", "nullable": True},
    ]
    [f] = on_disk["files"]
    assert f["path"] == f"parts/{f['sha256'][:2]}/{f['sha256']}.parquet"
    part = root / f["path"]
    assert f["rows"] == 2500 and f["bytes"] == part.stat().st_size
    assert f["sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
    assert "T" in on_disk["created_at"] and on_disk["created_at"].endswith("+00:00")

    assert store.read_table(ASSET, PARTITION).equals(table)
    assert store.read_table(ASSET, PARTITION, result.version).equals(table)
    assert store.latest(ASSET, PARTITION).as_dict() == on_disk
    assert store.assets() == [ASSET] and store.partitions(ASSET) == [PARTITION]
    assert staging_leftovers(root) == []


def test_republish_same_rows_with_other_batch_sizes_writes_nothing(store, root):
    table = make_table(5000)
    first = publish(store, table, batch_rows=1000)
    before = tree(root)
    partition_dir = root / "snapshots" / ASSET / PARTITION
    time.sleep(0.01)  # an mtime change would be visible
    for batch_rows in (1, 7, 777, 4999, 100_000):
        if batch_rows == 1:
            again = publish(store, table.slice(0, 5000), batch_rows=1)
        else:
            again = publish(store, table, batch_rows=batch_rows)
        assert again.version == first.version, f"batch size {batch_rows} changed the version"
        assert again.created is False
        assert again.manifest == store.read_manifest(ASSET, PARTITION, first.version)
    assert tree(root) == before, "a re-publish of the same rows wrote or touched files"
    # it records that the version was published again (store/retention.py: gc must not delete it now)
    assert (root / ".touched" / ASSET / PARTITION / f"{first.version}.json").is_file()
    assert [p.name for p in partition_dir.iterdir()] == [first.version]
    assert len(store.versions(ASSET, PARTITION)) == 1
    assert staging_leftovers(root) == []


def test_same_rows_same_version_when_the_dictionary_overflows(tmp_path):
    """Row groups large enough that a string column's dictionary passes Parquet's 1 MiB page limit.

    The writer falls back from dictionary to plain encoding at a point that depends on the chunks of
    the table it is handed; ``write_parts`` hands row groups made of the source's batches, so the
    same rows in different batch sizes give different bytes and a new version (docs/architecture.md
    says the same rows in the same order give the same version, whatever the batch sizes).
    """
    store = SnapshotStore(tmp_path / "storage")  # default settings: 131072-row groups
    n = 140_000
    table = pa.table({"id": pa.array(range(n), pa.int64()),
                      "name": pa.array([f"customer-name-{i:012d}" for i in range(n)])})
    first = store.publish(ASSET, PARTITION, table.schema, table.to_batches(max_chunksize=65_536), manifest_fields())
    second = store.publish(ASSET, PARTITION, table.schema, table.to_batches(max_chunksize=777), manifest_fields())
    assert second.version == first.version
    assert second.created is False
    assert len(store.versions(ASSET, PARTITION)) == 1


def test_different_rows_make_a_new_version_beside_the_old(store, root):
    old_table = make_table(3000)
    old = publish(store, old_table)
    old_folder = root / "snapshots" / ASSET / PARTITION / old.version
    old_files = {p.name: p.read_bytes() for p in old_folder.iterdir()}
    old_mtimes = tree(root)

    new_table = make_table(3000, salt="-changed")
    new = publish(store, new_table)
    assert new.created is True and new.version != old.version
    assert sorted(p.name for p in (root / "snapshots" / ASSET / PARTITION).iterdir()) == sorted([old.version, new.version])

    # the old version is untouched, byte for byte, and still loadable
    assert {p.name: p.read_bytes() for p in old_folder.iterdir()} == old_files
    assert all(tree(root)[k] == v for k, v in old_mtimes.items())
    assert store.read_table(ASSET, PARTITION, old.version).equals(old_table)
    assert store.read_table(ASSET, PARTITION, new.version).equals(new_table)
    assert store.read_table(ASSET, PARTITION).equals(new_table)  # latest
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [old.version, new.version]
    assert store.latest(ASSET, PARTITION).version == new.version


def test_row_order_is_part_of_the_version(store):
    table = make_table(100)
    a = publish(store, table)
    b = publish(store, table.take(list(range(99, -1, -1))))
    assert a.version != b.version


def test_schema_is_part_of_the_version(store):
    table = make_table(100)
    a = publish(store, table)
    renamed = table.rename_columns(["id", "full_name", "score"])
    b = publish(store, renamed)
    assert a.version != b.version
    assert store.read_table(ASSET, PARTITION, b.version).column_names == ["id", "full_name", "score"]


def test_partitions_and_assets_are_separate(store):
    table = make_table(10)
    a = publish(store, table, partition="2024-01-01")
    b = publish(store, table, partition="2024-01-02")
    c = publish(store, table, asset="other_asset")
    assert a.created and b.created and c.created
    assert store.assets() == [ASSET, "other_asset"]
    assert store.partitions(ASSET) == ["2024-01-01", "2024-01-02"]
    assert store.read_manifest(ASSET, "2024-01-02").partition == "2024-01-02"


# ------------------------------------------------------------------ integrity


def test_flipped_byte_is_caught_on_read_and_by_verify(store, root):
    result = publish(store, make_table(2000))
    part = part_file(store, result.manifest)
    assert store.verify_version(result.manifest) == []
    flip_byte(part)

    with pytest.raises(IntegrityError) as info:
        store.read_table(ASSET, PARTITION)
    assert part.name in str(info.value)
    assert result.version in str(info.value)
    with pytest.raises(IntegrityError):
        list(store.iter_batches(result.manifest))

    problems = store.verify_version(store.read_manifest(ASSET, PARTITION, result.version))
    assert len(problems) == 1
    assert part.name in problems[0] and "sha256" in problems[0]


def test_nested_columns_verify_and_read_back(store):
    """Parquet names list items ``element`` where Arrow says ``item``: a version with nested columns
    must still prove itself (the id digests the writer's Arrow schema, kept in the footer)."""
    table = pa.table({
        "id": pa.array([1, 2], pa.int64()),
        "tags": pa.array([[1, 2], None], pa.list_(pa.int32())),
        "attrs": pa.array([[("a", 1)], []], pa.map_(pa.string(), pa.int64())),
        "nested": pa.array([{"xs": [1.5]}, None], pa.struct([("xs", pa.list_(pa.float64()))])),
    })
    result = store.publish(ASSET, PARTITION, table.schema, table.to_batches(), manifest_fields())
    m = store.read_manifest(ASSET, PARTITION, result.version)
    assert store.verify_version(m) == []
    assert store.read_table(ASSET, PARTITION, result.version).equals(table)


def test_truncated_part_is_reported_with_its_size(store, root):
    result = publish(store, make_table(2000))
    part = part_file(store, result.manifest)
    part.write_bytes(part.read_bytes()[:-10])
    [problem] = store.verify_version(result.manifest)
    assert part.name in problem and "bytes" in problem
    with pytest.raises(IntegrityError, match=part.name):
        store.read_table(ASSET, PARTITION)


def test_missing_part_is_reported(root):
    store = SnapshotStore(root, settings=SMALL)
    result = publish(store, make_table(10_000), batch_rows=500)
    gone = part_file(store, result.manifest, 1)
    gone.unlink()
    problems = store.verify_version(result.manifest)
    assert len(problems) == 1
    assert gone.name in problems[0] and "missing" in problems[0]
    with pytest.raises(IntegrityError, match=gone.name):
        store.read_table(ASSET, PARTITION)


def test_version_folder_without_manifest_is_invisible(store, root):
    table = make_table(100)
    published = publish(store, table)
    orphan = root / "snapshots" / ASSET / PARTITION / "ffffffffffffffffffff"
    orphan.mkdir()
    pq.write_table(make_table(5), orphan / "part-00000.parquet")
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [published.version]
    assert store.latest(ASSET, PARTITION).version == published.version
    with pytest.raises(SnapshotNotFound):
        store.read_manifest(ASSET, PARTITION, "ffffffffffffffffffff")

    # a partition that holds only manifest-less folders has no versions at all
    lonely = root / "snapshots" / ASSET / "2024-02-01" / "eeeeeeeeeeeeeeeeeeee"
    lonely.mkdir(parents=True)
    pq.write_table(make_table(5), lonely / "part-00000.parquet")
    assert store.versions(ASSET, "2024-02-01") == []
    with pytest.raises(SnapshotNotFound):
        store.latest(ASSET, "2024-02-01")
    with pytest.raises(SnapshotNotFound):
        store.read_table(ASSET, "2024-02-01")


def test_unknown_partition_and_version_are_not_found(store):
    with pytest.raises(SnapshotNotFound):
        store.latest(ASSET, PARTITION)
    publish(store, make_table(3))
    with pytest.raises(SnapshotNotFound, match="nope"):
        store.read_manifest(ASSET, PARTITION, "nope")
    assert store.versions(ASSET, "2030-01-01") == []
    assert store.partitions("never_published") == []


# ------------------------------------------------------------------ parts and row groups


def test_multi_part_round_trip_with_fixed_row_groups(root):
    store = SnapshotStore(root, settings=FIXED)
    table = make_table(10_000)
    result = publish(store, table, batch_rows=777)
    m = result.manifest
    assert [f.path for f in m.files] == [f"parts/{f.sha256[:2]}/{f.sha256}.parquet" for f in m.files]
    assert [f.rows for f in m.files] == [3000, 3000, 3000, 1000]
    assert m.row_count == 10_000
    assert m.writer["row_group_rows"] == 1000 and m.writer["part_rows"] == 3000

    for f in m.files:
        meta = pq.ParquetFile(root / f.path).metadata
        assert meta.num_rows == f.rows
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000] * (f.rows // 1000)

    assert store.read_table(ASSET, PARTITION).equals(table)
    streamed = pa.Table.from_batches(list(store.iter_batches(m, batch_rows=512)))
    assert streamed.equals(table)
    assert store.read_table(ASSET, PARTITION, columns=["id"]).column("id").to_pylist() == list(range(10_000))

    # the same rows in other batch sizes cut the same row groups: the same version
    for batch_rows in (1000, 2999, 10_000):
        again = publish(store, table, batch_rows=batch_rows)
        assert (again.version, again.created) == (result.version, False)


def test_row_groups_cut_at_fixed_sizes_with_a_remainder(root):
    store = SnapshotStore(root, settings=WriterSettings(row_group_rows=1000, part_rows=1_000_000,
                                                        part_min_rows=1_000_000))
    result = publish(store, make_table(2500), batch_rows=333)
    meta = pq.ParquetFile(part_file(store, result.manifest)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]


def test_empty_result_publishes_a_valid_empty_snapshot(store, root):
    result = store.publish(ASSET, PARTITION, SCHEMA, iter([]), manifest_fields())
    assert result.created is True
    m = store.read_manifest(ASSET, PARTITION)
    assert m.row_count == 0
    assert len(m.files) == 1 and m.files[0].rows == 0
    assert [c.name for c in m.schema] == ["id", "name", "score"]
    table = store.read_table(ASSET, PARTITION)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)
    assert store.verify_version(m) == []
    # empty batches are the same empty snapshot
    empty = pa.RecordBatch.from_pylist([], schema=SCHEMA)
    again = store.publish(ASSET, PARTITION, SCHEMA, iter([empty, empty]), manifest_fields())
    assert (again.version, again.created) == (result.version, False)


# ------------------------------------------------------------------ hostile names

HOSTILE = ["../x", "a/b", ".hidden", "..", ".", "", "a\\b", "/etc", "x\x00y", "line\nbreak"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_partition_key_is_rejected_before_writing(root, bad):
    store = SnapshotStore(root)
    with pytest.raises(ValueError, match="partition key"):
        publish(store, make_table(10), partition=bad)
    assert not root.exists() or list(root.rglob("*")) == []


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_snapshot_name_is_rejected_before_writing(root, bad):
    store = SnapshotStore(root)
    with pytest.raises(ValueError, match="snapshot name"):
        publish(store, make_table(10), asset=bad)
    assert not root.exists() or list(root.rglob("*")) == []


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", ".."])
def test_hostile_names_are_rejected_on_read(store, bad):
    publish(store, make_table(3))
    with pytest.raises(ValueError):
        store.read_manifest(ASSET, PARTITION, bad)
    with pytest.raises(ValueError):
        store.versions(ASSET, bad)
    with pytest.raises(ValueError):
        store.read_table(bad, PARTITION)


# ------------------------------------------------------------------ what the caller hands in


def test_caller_fields_cannot_override_what_the_store_computes(store, root):
    """``fields`` are the manifest fields the store cannot know; the ones it computes (asset,
    partition, version, files, row count, schema, ...) must not be replaceable by a caller.

    Today ``**fields`` is spread last into the manifest, so a caller's "version" or "asset" lands in
    the manifest of a folder it does not describe; verify then looks for files elsewhere.
    """
    table = make_table(10)
    try:
        fields = manifest_fields(version="not-the-version", asset="another_asset", row_count=10)
        result = store.publish(ASSET, PARTITION, table.schema, table.to_batches(), fields)
    except (ValueError, ManifestError):
        assert store.versions(ASSET, PARTITION) == []
        return
    m = store.read_manifest(ASSET, PARTITION, result.version)
    assert m.version == result.version
    assert m.asset == ASSET
    assert store.verify_version(m) == []


def test_incomplete_fields_fail_before_anything_is_visible(store, root):
    fields = manifest_fields()
    del fields["query"], fields["source_state"]
    with pytest.raises(ManifestError, match="query"):
        store.publish(ASSET, PARTITION, SCHEMA, batches_of(make_table(10), 5), fields)
    assert store.versions(ASSET, PARTITION) == []
    assert staging_leftovers(root) == []


def test_batch_with_another_schema_fails_and_leaves_nothing(store, root):
    good = make_table(10).to_batches()
    bad = pa.record_batch([pa.array([1]), pa.array([2])], names=["id", "other"])
    with pytest.raises(TypeError, match="schema"):
        store.publish(ASSET, PARTITION, SCHEMA, iter(good + [bad]), manifest_fields())
    assert store.versions(ASSET, PARTITION) == []
    assert staging_leftovers(root) == []


def test_source_failing_mid_stream_leaves_nothing(store, root):
    class SourceBroke(RuntimeError):
        pass

    def stream() -> Iterator[pa.RecordBatch]:
        yield from batches_of(make_table(3000), 1000)[:2]
        raise SourceBroke("connection lost")

    with pytest.raises(SourceBroke):
        store.publish(ASSET, PARTITION, SCHEMA, stream(), manifest_fields())
    assert store.versions(ASSET, PARTITION) == []
    assert staging_leftovers(root) == []
    # a retry from the partition's start publishes the full result
    result = publish(store, make_table(3000))
    assert result.created and store.read_table(ASSET, PARTITION).num_rows == 3000


# ------------------------------------------------------------------ concurrency


def test_two_concurrent_threads_publishing_the_same_content(root):
    for round_ in range(5):
        store = SnapshotStore(root)
        partition = f"2024-01-{round_ + 1:02d}"
        table = make_table(4000, salt=str(round_))
        barrier = threading.Barrier(2, timeout=30)
        results: list[Any] = []
        errors: list[BaseException] = []

        def stream() -> Iterator[pa.RecordBatch]:
            batches = batches_of(table, 1000)
            yield from batches[:-1]
            barrier.wait()  # both writers are mid-stream: they finish and publish at once
            yield batches[-1]

        def run() -> None:
            try:
                results.append(store.publish(ASSET, partition, SCHEMA, stream(), manifest_fields()))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(results) == 2
        assert results[0].version == results[1].version
        assert sorted(r.created for r in results) == [False, True]
        pdir = root / "snapshots" / ASSET / partition
        [vdir] = list(pdir.iterdir())
        assert sorted(p.name for p in vdir.iterdir()) == [MANIFEST_NAME]
        assert all(part_file(store, results[0].manifest, i).exists() for i in range(len(results[0].manifest.files)))
        assert len(store.versions(ASSET, partition)) == 1
        assert store.read_table(ASSET, partition).equals(table)
    assert staging_leftovers(root) == []


_CONCURRENT_WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    import pyarrow as pa
    from snapshot_platform.store import SnapshotStore, WriterSettings

    root, go = sys.argv[1], sys.argv[2]
    fields = json.loads(sys.argv[3])
    n = 6000
    table = pa.table({"id": pa.array(range(n), pa.int64()), "v": pa.array([f"v{i}" for i in range(n)])})

    def stream():
        batches = table.to_batches(max_chunksize=1000)
        yield from batches[:-1]
        open(go + f".ready-{os.getpid()}", "w").close()  # this writer is staged, up to the gate
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.001)
        yield batches[-1]

    store = SnapshotStore(root, settings=WriterSettings(row_group_rows=1000, part_rows=2000))
    r = store.publish("customer_data", "2024-01-01", table.schema, stream(), fields)
    print(json.dumps({"version": r.version, "created": r.created}), flush=True)
    """
)


def test_two_concurrent_processes_publishing_the_same_content(tmp_path, root):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_WRITER, str(root), str(go), json.dumps(manifest_fields())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120  # let all of them import and stream up to the gate
    while len(list(tmp_path.glob("go.ready-*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer never reached the gate"
        time.sleep(0.05)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert len({o["version"] for o in outs}) == 1
    assert sorted(o["created"] for o in outs) == [False, False, True]
    store = SnapshotStore(root)
    [m] = store.versions(ASSET, PARTITION)
    vdir = root / "snapshots" / ASSET / PARTITION / m.version
    assert sorted(p.name for p in vdir.iterdir()) == [MANIFEST_NAME]
    assert [f.rows for f in m.files] == [2000] * 3  # part_rows below part_min_rows: fixed cuts
    assert sorted(p.name for p in (root / "parts").rglob("*.parquet")) == sorted(f"{f.sha256}.parquet" for f in m.files)
    assert not list((root / ".intents").iterdir())
    assert store.verify_version(m) == []
    assert store.read_table(ASSET, PARTITION).num_rows == 6000


# ------------------------------------------------------------------ killed writers

def test_writer_killed_mid_stream_leaves_nothing_a_reader_can_see(root):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(root), json.dumps(manifest_fields())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "streaming", proc.stderr.read()
        # wait until finished part files sit in staging, so the kill lands mid-write
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(list((root / ".staging").rglob("part-*.parquet"))) >= 2:
                break
            time.sleep(0.02)
        assert len(list((root / ".staging").rglob("part-*.parquet"))) >= 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    store = SnapshotStore(root)
    assert store.versions(ASSET, PARTITION) == []
    assert store.assets() == []
    with pytest.raises(SnapshotNotFound):
        store.latest(ASSET, PARTITION)
    assert not (root / "snapshots").exists() or not any((root / "snapshots").rglob(MANIFEST_NAME))

    # a rerun publishes, and only its own data is visible
    table = make_table(5000)
    result = publish(store, table)
    assert result.created
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [result.version]
    assert store.read_table(ASSET, PARTITION).equals(table)


def test_killed_between_placing_parts_and_writing_the_manifest_reuses_the_parts(store, root):
    table = make_table(3000)
    first = publish(store, table)
    vdir = root / "snapshots" / ASSET / PARTITION / first.version
    part = part_file(store, first.manifest)
    before = part.stat()
    (vdir / MANIFEST_NAME).unlink()  # the writer died right after placing its parts
    assert store.versions(ASSET, PARTITION) == []

    rerun = publish(store, table, batch_rows=333)
    assert (rerun.version, rerun.created) == (first.version, True)
    assert sorted(p.name for p in vdir.iterdir()) == [MANIFEST_NAME]
    after = part.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not written again
    assert store.verify_version(rerun.manifest) == []
    assert store.read_table(ASSET, PARTITION).equals(table)
    assert staging_leftovers(root) == []


def test_a_torn_or_missing_shared_part_is_placed_again_and_old_leftovers_set_aside(root):
    store = SnapshotStore(root, settings=SMALL)
    table = make_table(7000)
    first = publish(store, table)
    assert len(first.manifest.files) >= 3
    vdir = root / "snapshots" / ASSET / PARTITION / first.version
    (vdir / MANIFEST_NAME).unlink()
    torn = part_file(store, first.manifest, 1)
    torn.write_bytes(torn.read_bytes()[:-7])  # a part of another size than its content: never trusted
    part_file(store, first.manifest, 2).unlink()  # never made it
    pq.write_table(make_table(5), vdir / "part-00000.parquet")  # an earlier release's writer died here

    rerun = publish(store, table)
    assert (rerun.version, rerun.created) == (first.version, True)
    assert store.verify_version(rerun.manifest) == []
    assert store.read_table(ASSET, PARTITION).equals(table)
    assert sorted(p.name for p in vdir.iterdir()) == [MANIFEST_NAME]
    assert [p.name.split("-")[0] for p in staging_leftovers(root)] == ["abandoned"]


def test_identical_parts_are_stored_once_across_versions_and_partitions(root):
    """An insert at the end and an update in one key range change only the parts around them."""
    store = SnapshotStore(root, settings=WriterSettings(row_group_rows=1000, part_rows=8000, part_min_rows=200,
                                                        part_boundary_modulus=500))
    base = make_table(20_000)
    a = publish(store, base, batch_rows=999).manifest
    names = base.column("name").to_pylist()
    names[10_000:10_050] = [f"changed-{i}" for i in range(50)]  # 50 rows updated in one key range
    changed = pa.table({"id": base.column("id"), "name": names, "score": base.column("score")}, schema=SCHEMA)
    b = publish(store, pa.concat_tables([changed, make_table(200, start=20_000)]), batch_rows=4096,
                partition="2024-01-02").manifest
    old, new = {f.sha256 for f in a.files}, [f for f in b.files if f.sha256 not in {f.sha256 for f in a.files}]
    assert len(a.files) >= 20 and 1 <= len(new) <= 4
    assert sum(f.bytes for f in new) <= 0.15 * sum(f.bytes for f in a.files)
    stored = sorted(p.name for p in (root / "parts").rglob("*.parquet"))
    assert stored == sorted({f"{sha}.parquet" for sha in old | {f.sha256 for f in b.files}})  # each content once
    assert store.verify_version(a) == [] and store.verify_version(b) == []
    # the same rows in another partition (another asset too) add no part at all
    c = publish(store, base, batch_rows=5000, asset="other_asset").manifest
    assert [f.sha256 for f in c.files] == [f.sha256 for f in a.files]
    assert sorted(p.name for p in (root / "parts").rglob("*.parquet")) == stored


def test_verify_hashes_a_shared_part_once_per_run(root, monkeypatch):
    from snapshot_platform.store import verify

    store = SnapshotStore(root, settings=WriterSettings(row_group_rows=1000, part_rows=8000, part_min_rows=200,
                                                        part_boundary_modulus=500))
    a = publish(store, make_table(6000)).manifest
    b = publish(store, make_table(6000), partition="2024-01-02").manifest  # the same parts
    hashed_files: list[str] = []
    real = verify.sha256_of
    monkeypatch.setattr(verify, "sha256_of", lambda p: hashed_files.append(str(p)) or real(p))
    run: dict[str, tuple[str, int]] = {}
    assert store.verify_version(a, hashed=run) == [] and store.verify_version(b, hashed=run) == []
    assert len(hashed_files) == len(set(hashed_files)) == len(a.files) > 1
    flip_byte(part_file(store, b, 0))
    assert store.verify_version(b, hashed={}) and store.verify_version(a) != []  # a new run hashes again


def test_part_boundaries_follow_the_key_not_the_batches_or_the_start():
    """A boundary depends on the rows just before it: dropping the first rows keeps every later
    boundary (after a short resynchronisation), and the source's batch sizes change nothing."""
    from snapshot_platform.store.boundaries import key_hashes
    from snapshot_platform.store.writer import write_parts

    settings = WriterSettings(row_group_rows=1000, part_rows=8000, part_min_rows=200, part_boundary_modulus=500)
    table = make_table(30_000)

    def ends(t: pa.Table, batch_rows: int) -> list[int]:
        written = write_parts(t.to_batches(max_chunksize=batch_rows), SCHEMA, lambda _n: _Sink(), settings,
                              key=["id"])
        out, at = [], t.column("id")[0].as_py()
        for part in written.parts:
            at += part.rows
            out.append(at)
        return out

    full = ends(table, 1000)
    assert ends(table, 7) == full == ends(table, 30_000)
    tail = ends(table.slice(3000), 1000)
    assert set(full[-10:]) <= set(tail)
    # the key hash is fixed (no seed): these values are what every process on every platform computes
    h = key_hashes(table.slice(0, 3).to_batches()[0], ["id"])
    assert h.tolist() == key_hashes(pa.record_batch({"id": pa.array([0, 1, 2], pa.int64())}), ["id"]).tolist()
    assert h.tolist() == _KEY_HASHES


def test_a_version_in_the_layout_before_shared_parts_reads_and_verifies(root):
    """Format 2 (parts in the version folder, paths relative to it) stays readable and verifiable,
    with the same rules: a flipped byte, a stray file, a path that is not its sha256's in format 3."""
    store = SnapshotStore(root, settings=FIXED)
    table = make_table(7000)
    m = old_layout(store, publish(store, table).manifest)
    folder = root / "snapshots" / ASSET / PARTITION / m.version
    assert m.format_version == 2 and not m.shared_parts and [f.path for f in m.files] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    shutil.rmtree(root / "parts")  # its parts are its own: the shared copies are not read
    assert store.verify_version(m) == []
    assert store.read_table(ASSET, PARTITION).equals(table)
    assert pa.Table.from_batches(list(store.iter_batches(m, batch_rows=999))).equals(table)

    flip_byte(folder / "part-00001.parquet")
    [problem] = store.verify_version(m)
    assert problem.startswith((folder / "part-00001.parquet").as_uri()) and "sha256" in problem
    with pytest.raises(IntegrityError, match="part-00001.parquet"):
        store.read_table(ASSET, PARTITION)
    flip_byte(folder / "part-00001.parquet")
    pq.write_table(make_table(5), folder / "part-00003.parquet")
    assert [p.endswith("part-00003.parquet: not listed in the manifest") for p in store.verify_version(m)] == [True]


def test_a_format_3_path_must_be_its_parts_content_name():
    doc = json.loads(MANIFEST_FORMAT_2)
    doc["format_version"] = 3
    with pytest.raises(ManifestError, match=r"files\[0\]\.path 'part-00000.parquet' must be 'parts/bb/b+\.parquet'"):
        Manifest.from_dict(doc, where="m.json")
    doc["files"][0]["path"] = "parts/bb/" + "b" * 64 + ".parquet"
    assert Manifest.from_dict(doc, where="m.json").shared_parts


def test_identical_runs_of_rows_share_one_part_within_a_version(root):
    """20,000 equal rows (no key) cut every 3,000 rows: the manifest lists the one shared part six
    times, and the version reads back whole."""
    store = SnapshotStore(root, settings=FIXED)
    table = pa.table({"v": pa.array(["same"] * 20_000)})
    fields = manifest_fields(key=None)
    result = store.publish(ASSET, PARTITION, table.schema, table.to_batches(max_chunksize=3000), fields)
    m = result.manifest
    assert [f.rows for f in m.files] == [3000] * 6 + [2000] and len({f.sha256 for f in m.files}) == 2
    assert len(list((root / "parts").rglob("*.parquet"))) == 2
    assert store.verify_version(m) == [] and store.read_table(ASSET, PARTITION).equals(table)


_KEY_HASHES = [12035550249420947055, 6755974106381971767, 7235116703822611636]  # key-hash-1 of ids 0, 1, 2


class _Sink:
    def write(self, data: Any) -> int:
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ processes that read exit cleanly

# ---------------------------------------------------------------- the typed manifest (store/manifest.py)

# Written by the release before the manifest was typed (its ``dumps``), byte for byte: a format 2
# manifest with checks, a ``source_type`` and a key this release does not know (``retention_hint``), and a
# format 1 manifest without ``key``, ``writer`` or ``checks``.
MANIFEST_FORMAT_2 = b"""{
  "window": {
    "start": "2024-03-10T00:00:00+00:00",
    "end": "2024-03-11T00:00:00+00:00"
  },
  "query": "SELECT id, ip FROM t WHERE ts >= :partition_start AND ts < :partition_end",
  "query_sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "params": {
    "partition_start": "2024-03-10T00:00:00+00:00",
    "partition_end": "2024-03-11T00:00:00+00:00"
  },
  "key": [
    "id"
  ],
  "source": {
    "name": "pg",
    "kind": "postgres",
    "host": "127.0.0.1",
    "database": "shop"
  },
  "source_state": {
    "snapshot": "00000003-0000001B-1",
    "wal_lsn": "0/1A2B3C4"
  },
  "retention_hint": "kept by a newer writer",
  "dagster_run_id": null,
  "code_version": "0123456789ab",
  "library_versions": {
    "python": "3.11.7",
    "pyarrow": "17.0.0"
  },
  "format_version": 2,
  "asset": "orders",
  "partition": "2024-03-10",
  "version": "bcdd79b503dc78b4c3c2",
  "created_at": "2024-03-11T01:02:03.456789+00:00",
  "row_count": 3,
  "files": [
    {
      "path": "part-00000.parquet",
      "sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
      "bytes": 1234,
      "rows": 3
    }
  ],
  "schema": [
    {
      "name": "id",
      "type": "int64",
      "nullable": false
    },
    {
      "name": "ip",
      "type": "string",
      "nullable": true,
      "source_type": "inet"
    }
  ],
  "writer": {
    "format": "parquet",
    "compression": "zstd",
    "compression_level": 1,
    "row_group_rows": 131072,
    "part_rows": 4194304
  },
  "checks": {
    "key_unique": {
      "passed": true,
      "blocking": true,
      "severity": "ERROR",
      "details": {
        "key": [
          "id"
        ],
        "duplicate_rows": 0,
        "examples": []
      }
    },
    "volume": {
      "passed": false,
      "blocking": false,
      "severity": "WARN",
      "details": {
        "row_count": 3,
        "trailing_median": 10,
        "deviation": 0.7,
        "tolerance": 0.5
      }
    }
  }
}
"""
MANIFEST_FORMAT_1 = b"""{
  "format_version": 1,
  "asset": "orders",
  "partition": "2024-01-01",
  "version": "0ecfa338167a178c5d41",
  "window": {
    "start": "2024-01-01T00:00:00+00:00",
    "end": "2024-01-02T00:00:00+00:00"
  },
  "created_at": "2024-01-02T00:00:00+00:00",
  "row_count": 2,
  "files": [
    {
      "path": "part-00000.parquet",
      "sha256": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
      "bytes": 99,
      "rows": 2
    }
  ],
  "schema": [
    {
      "name": "id",
      "type": "int64",
      "nullable": true
    }
  ],
  "query": "SELECT 1",
  "query_sha256": "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
  "params": {},
  "source": {
    "name": "s",
    "kind": "sqlite"
  },
  "source_state": null,
  "dagster_run_id": "run-1",
  "code_version": "x",
  "library_versions": {}
}
"""


@pytest.mark.parametrize("raw", [MANIFEST_FORMAT_2, MANIFEST_FORMAT_1], ids=["format2", "format1"])
def test_a_manifest_written_before_the_type_round_trips_to_the_same_bytes(raw):
    m = Manifest.from_json(raw, where="manifest.json")
    assert m.to_json() == raw
    assert Manifest.from_json(m.to_json(), where="again") == m
    assert m.as_dict() == json.loads(raw)


def test_the_manifest_fields_are_read_from_the_type_and_unknown_keys_survive():
    m = Manifest.from_json(MANIFEST_FORMAT_2, where="manifest.json")
    assert (m.format_version, m.asset, m.partition, m.version) == (2, "orders", "2024-03-10", "bcdd79b503dc78b4c3c2")
    assert m.row_count == 3 and m.key == ("id",)
    assert m.files == (FileEntry(path="part-00000.parquet", sha256="b" * 64, bytes=1234, rows=3),)
    assert [(c.name, c.type, c.nullable, c.source_type) for c in m.schema] == [
        ("id", "int64", False, None), ("ip", "string", True, "inet")]
    assert m.checks["key_unique"] == CheckOutcome.of(True, True, {"key": ["id"], "duplicate_rows": 0, "examples": []})
    assert (m.checks["volume"].passed, m.checks["volume"].blocking, m.checks["volume"].severity) == (False, False, "WARN")
    assert m.extra == {"retention_hint": "kept by a newer writer"}
    old = Manifest.from_json(MANIFEST_FORMAT_1, where="manifest.json")
    assert old.key is None and old.writer is None and old.checks is None and old.extra == {}
    assert old.schema[0].source_type is None


def test_a_bad_manifest_is_refused_naming_the_file_and_the_field():
    doc = json.loads(MANIFEST_FORMAT_2)
    del doc["query_sha256"]
    with pytest.raises(ManifestError, match=r"^m\.json: missing required fields: query_sha256$"):
        Manifest.from_json(json.dumps(doc).encode(), where="m.json")
    doc = json.loads(MANIFEST_FORMAT_2)
    doc["files"][0]["rows"] = -1
    with pytest.raises(ManifestError, match=r"^m\.json: files\[0\]\.rows must be a non-negative integer$"):
        Manifest.from_json(json.dumps(doc).encode(), where="m.json")
    with pytest.raises(ManifestError, match=r"^m\.json: not valid JSON"):
        Manifest.from_json(b"{", where="m.json")


def test_key_hashes_of_nulls_and_sliced_batches_are_pinned():
    """key-hash-1 over every kind of key column, with NULLs, on a batch that starts mid-buffer (the
    values are read from Arrow's buffers directly, not through pyarrow's to_numpy): pinned values,
    computed before that change, so that part boundaries (and so version ids) do not move."""
    import datetime as dt

    from snapshot_platform.store.boundaries import key_hashes

    batch = pa.record_batch({
        "i": pa.array([5, None, -7, 2**62, None, 0, 3], pa.int64()),
        "b": pa.array([True, None, False, True, False, None, True]),
        "t": pa.array([dt.datetime(2024, 1, 1), None, dt.datetime(1969, 12, 31, 23, 59, 59, 999999), None,
                       dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 3), None], pa.timestamp("us", "UTC")),
        "s": pa.array(["a", None, "", "héllo", None, "zz", "a"]),
        "d": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), None, dt.date(2024, 1, 4),
                       dt.date(2024, 1, 5), None, dt.date(1, 1, 1)]),
    })
    sliced = batch.slice(1)
    assert key_hashes(sliced, ["i", "s", "t", "b", "d"]).tolist() == [
        12847143632441045829, 11784649945508253810, 2027165419351091602, 8751525067451440287,
        14438963848748943758, 242618106568146261]
    for column in batch.schema.names:  # a slice hashes as the same rows copied into fresh buffers
        fresh = pa.RecordBatch.from_pylist(sliced.to_pylist(), schema=batch.schema)
        assert key_hashes(sliced, [column]).tolist() == key_hashes(fresh, [column]).tolist()


def test_writer_encodings_are_what_the_settings_and_the_docs_say(tmp_path):
    """Default writer: dictionary pages for text and binary columns only, min/max statistics for
    every other column (nested columns leaf by leaf), DECIMAL of precision <= 18 as INT32/INT64
    (wider ones as fixed-length bytes); the earlier settings (``all``/``all``/``fixed``) give the
    earlier encodings; the manifest records them; an unknown value is refused naming the setting.
    Values read back are the same."""
    from decimal import Decimal

    from snapshot_platform.store.writer import write_parts

    table = pa.table({
        "id": pa.array(range(300), pa.int64()),
        "d9": pa.array([Decimal(i) / 100 for i in range(300)], pa.decimal128(9, 2)),
        "d18": pa.array([Decimal(-i) / 1000 for i in range(300)], pa.decimal128(18, 3)),
        "d30": pa.array([Decimal(i) for i in range(300)], pa.decimal128(30, 0)),
        "s": pa.array([f"v{i % 3}" for i in range(300)]),
        "b": pa.array([b"x" * (i % 2) for i in range(300)], pa.binary()),
        "tags": pa.array([[f"t{i % 2}"] for i in range(300)], pa.list_(pa.string())),  # nested: by leaf
        "pt": pa.array([{"x": i, "name": f"n{i % 4}"} for i in range(300)]),
    })

    def written(settings: WriterSettings) -> pq.FileMetaData:
        path = tmp_path / f"{id(settings)}.parquet"
        with open(path, "wb") as fh:
            write_parts(table.to_batches(), table.schema, lambda _n: fh, settings)
        assert pq.read_table(path).equals(table)  # the same values and types back
        return pq.ParquetFile(path).metadata

    def columns(meta: pq.FileMetaData) -> dict[str, Any]:
        return {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
                for i in range(meta.num_columns)}

    today = columns(written(WriterSettings()))
    assert {n: c.physical_type for n, c in today.items() if n.startswith("d")} == {
        "d9": "INT32", "d18": "INT64", "d30": "FIXED_LEN_BYTE_ARRAY"}
    assert {n for n, c in today.items() if c.is_stats_set} == {"id", "d9", "d18", "d30", "pt.x"}
    assert {n for n, c in today.items() if c.has_dictionary_page} == {"s", "b", "tags.list.element", "pt.name"}

    earlier = columns(written(WriterSettings(dictionary="all", statistics="all", decimal_storage="fixed")))
    assert {c.physical_type for n, c in earlier.items() if n.startswith("d")} == {"FIXED_LEN_BYTE_ARRAY"}
    assert all(c.is_stats_set for c in earlier.values())
    assert all(c.has_dictionary_page for c in earlier.values())

    assert {k: WriterSettings().as_dict()[k] for k in ("dictionary", "statistics", "decimal_storage")} == {
        "dictionary": "text", "statistics": "non-text", "decimal_storage": "integer"}
    with pytest.raises(ValueError, match="WriterSettings.decimal_storage"):
        WriterSettings(decimal_storage="bytes")


def test_default_parts_are_about_17000_rows_as_the_docs_say():
    """docs/storage.md: with the default WriterSettings a part ends after a row whose key hash is 0
    modulo 16,384 once it holds 2,048 rows, at 131,072 rows at the latest: about 17,000 rows a part.
    1M sequential keys, fed in 65,536-row batches."""
    from snapshot_platform.store.boundaries import PartCutter

    s = WriterSettings()
    cutter = PartCutter(["id"], s.part_boundary_modulus, s.part_min_rows, s.part_rows)
    sizes, start, offset = [], 0, 0
    for first in range(0, 1_000_000, 65_536):
        batch = pa.record_batch({"id": pa.array(range(first, min(first + 65_536, 1_000_000)), pa.int64())})
        for end in cutter.cuts(batch):
            sizes.append(offset + end - start)
            start = offset + end
        offset += batch.num_rows
    assert all(s.part_min_rows <= n <= s.part_rows for n in sizes)
    assert 12_000 <= sum(sizes) / len(sizes) <= 25_000, sum(sizes) / len(sizes)
