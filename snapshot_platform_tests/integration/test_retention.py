"""Retention (``snapshot-platform gc --keep-last N``): versions pinned by MLflow runs' snapshot locks
and registered model versions are kept, so is every partition's latest version; ``--dry-run``
deletes nothing; the manifest goes before the parts; and a publish racing a gc never returns a
version gc then deletes (threads synchronised on the gc's steps, not on sleeps).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snapshot_platform.cli import main
from snapshot_platform.store import SnapshotStore, WriterSettings, retention
from snapshot_platform.store import publish as publish_module
from snapshot_platform.training.lock import LOCK_NAME, LockEntry, SnapshotLock
from snapshot_platform.training.mlflow_logging import MlflowTracking
from snapshot_platform.training.reproduce import locked_manifests
from snapshot_platform_tests.store_writes import ASSET, make_table, old_layout, publish


def _versions(store: SnapshotStore, partition: str, n: int) -> list[Any]:
    """n versions of one partition, oldest first (different rows each)."""
    return [publish(store, make_table(50 + i, salt=f"v{i}"), partition=partition).manifest for i in range(n)]


def _log_run(tracking: MlflowTracking, store: SnapshotStore, manifests: list[Any], register: str | None = None) -> str:
    lock = SnapshotLock(model="m", snapshots=tuple(
        LockEntry.of(m, store.uri(store.version_dir(m.asset, m.partition, m.version))) for m in manifests))
    experiment = tracking.experiment_id("retention")
    with tracking.active() as ml, ml.start_run(experiment_id=experiment) as run:  # restores MLflow's URIs after
        ml.log_text(lock.to_json(), LOCK_NAME)
    if register:
        client = tracking.client()
        client.create_registered_model(register)
        client.create_model_version(register, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.delete_run(run.info.run_id)  # still found: through the registered version (and ViewType.ALL)
    return run.info.run_id


def test_gc_keeps_pinned_and_latest_versions_dry_run_deletes_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "storage"))
    a = _versions(store, "2024-01-01", 4)
    b = _versions(store, "2024-01-02", 2)
    tracking = MlflowTracking(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    run_a = _log_run(tracking, store, [a[0]])  # a run pins the oldest version of 2024-01-01
    _log_run(tracking, store, [a[1], b[0]], register="churn")  # a registered model version pins two more
    args = ["--storage", str(tmp_path / "storage"), "gc", "--keep-last", "1", "--grace", "0",
            "--tracking-uri", tracking.tracking_uri, "--json"]

    before = sorted(p for p in (tmp_path / "storage").rglob("*") if p.is_file())
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)
    assert [d["version"] for d in report["deleted"]] == [a[2].version]  # the only version no rule keeps
    assert report["bytes_freed"] == 0 and report["would_free"] == sum(f.bytes for f in a[2].files)
    assert sorted(p for p in (tmp_path / "storage").rglob("*") if p.is_file()) == before  # nothing deleted

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert [d["version"] for d in report["deleted"]] == [a[2].version]
    assert report["bytes_freed"] == sum(f.bytes for f in a[2].files)
    assert [m.version for m in store.versions(ASSET, "2024-01-01")] == [a[0].version, a[1].version, a[3].version]
    assert [m.version for m in store.versions(ASSET, "2024-01-02")] == [b[0].version, b[1].version]
    assert not store.version_dir(ASSET, "2024-01-01", a[2].version).exists()  # its parts went too
    # every kept run still finds (and verifies) what it trained on: reproduce's first step
    assert [m.version for m in locked_manifests(store, tracking.load_lock(run_a))] == [a[0].version]
    for m in store.versions(ASSET, "2024-01-01") + store.versions(ASSET, "2024-01-02"):
        assert store.verify_version(m) == []

    text = CliRunner().invoke(main, [*args[:-1], "--keep-within", "1d"])  # created today: all kept
    assert text.exit_code == 0 and "deleted 0 versions, 0 bytes freed" in text.output, text.output


@pytest.mark.parametrize("pause_at", ["checked", "manifest_deleted"])
def test_a_publish_racing_gc_never_returns_a_deleted_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            pause_at: str) -> None:
    """gc pauses after one of its steps; meanwhile the old version's rows are published again (the
    source went back to them): the publish returns that version, and it must survive the gc."""
    store = SnapshotStore(str(tmp_path / "storage"))
    old, _latest = _versions(store, "2024-01-01", 2)
    reached, resume = threading.Event(), threading.Event()

    def step(name: str, item: Any) -> None:
        if name == pause_at:
            reached.set()
            assert resume.wait(60)

    monkeypatch.setattr(retention, "_step", step)
    result: dict[str, Any] = {}
    gc = threading.Thread(target=lambda: result.update(
        items=retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0)).items))
    gc.start()
    assert reached.wait(60)  # gc has planned to delete `old` and is at its step
    again = publish(store, make_table(50, salt="v0"), partition="2024-01-01")
    assert again.version == old.version
    resume.set()
    gc.join(60)
    assert not gc.is_alive()
    (item,) = result["items"]
    assert item.version == old.version and item.deleted is False  # gc saw the publish and kept it
    kept = store.read_manifest(ASSET, "2024-01-01", old.version)
    assert store.verify_version(kept) == []
    assert store.read_table(ASSET, "2024-01-01", old.version).num_rows == 50


def _part_files(store: SnapshotStore, m: Any) -> list[Path]:
    return [Path(str(store.part_path(m, f))) for f in m.files]


def test_gc_deletes_the_manifest_before_the_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(str(tmp_path / "storage"))
    old, latest = _versions(store, "2024-01-01", 2)
    seen: list[tuple[str, bool, bool]] = []
    folder = Path(str(store.version_dir(ASSET, "2024-01-01", old.version)))
    parts = _part_files(store, old)

    def step(name: str, *_: Any) -> None:
        seen.append((name, (folder / "manifest.json").exists(), all(p.exists() for p in parts)))

    monkeypatch.setattr(retention, "_step", step)
    monkeypatch.setattr(retention, "_sweep_step", step)
    done = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
    (item,) = done.items
    assert item.deleted and item.shared
    assert seen == [("checked", True, True), ("manifest_deleted", False, True), ("aside", False, False)]
    assert not folder.exists() and [m.version for m in store.versions(ASSET, "2024-01-01")] == [latest.version]
    assert not any(p.exists() for p in parts) and all(p.exists() for p in _part_files(store, latest))
    assert done.bytes_freed == sum(f.bytes for f in old.files) and len(done.sweep.parts) == len(old.files)


def test_a_part_shared_with_a_kept_version_is_kept(tmp_path: Path) -> None:
    """Two versions of one partition share their first rows' part; deleting the older frees only
    the parts no other manifest references, and a dry run says so without deleting anything."""
    store = SnapshotStore(str(tmp_path / "storage"), settings=WriterSettings(
        row_group_rows=1000, part_rows=8000, part_min_rows=200, part_boundary_modulus=500))
    old = publish(store, make_table(5000), partition="2024-01-01").manifest
    new = publish(store, make_table(5100), partition="2024-01-01").manifest  # 100 rows more at the end
    shared = {f.sha256 for f in old.files} & {f.sha256 for f in new.files}
    only_old = [f for f in old.files if f.sha256 not in shared]
    assert shared and only_old

    dry = retention.apply_retention(store, 1, None, set(), dry_run=True, grace=retention.dt.timedelta(0))
    assert [i.version for i in dry.items] == [old.version] and not dry.items[0].deleted
    assert dry.bytes_freed == sum(f.bytes for f in only_old) and all(p.exists() for p in _part_files(store, old))

    done = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
    assert set(done.sweep.parts) == {f.sha256 for f in only_old}
    assert done.bytes_freed == sum(f.bytes for f in only_old)
    assert store.verify_version(store.read_manifest(ASSET, "2024-01-01", new.version)) == []


def test_an_old_layout_version_is_deleted_with_its_folder(tmp_path: Path) -> None:
    """A version written before shared parts (format 2: parts in its version folder) is deleted by
    the same steps; its own parts free their bytes."""
    store = SnapshotStore(str(tmp_path / "storage"))
    old = old_layout(store, publish(store, make_table(300, salt="x"), partition="2024-01-01").manifest)
    publish(store, make_table(40), partition="2024-01-01")
    done = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
    (item,) = done.items
    assert item.version == old.version and item.deleted and not item.shared
    assert not Path(str(store.version_dir(ASSET, "2024-01-01", old.version))).exists()
    # its folder's parts, and the shared copies nothing references any more
    assert done.bytes_freed == 2 * sum(f.bytes for f in old.files)


@pytest.mark.parametrize("publish_first", [True, False], ids=["publish-then-sweep", "sweep-then-publish"])
def test_a_publish_reusing_a_part_while_gc_sweeps_it_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              publish_first: bool) -> None:
    """The race of shared parts. A publish of another partition with the same rows as a version gc
    deletes reuses its parts. publish-then-sweep: the publish has found every part present and is
    held just before its manifest while gc deletes the version and sweeps (its intent keeps the
    parts). sweep-then-publish: gc is held with the parts moved aside while the publish runs whole
    (it finds them absent and places its own; gc's second look sees its manifest)."""
    store = SnapshotStore(str(tmp_path / "storage"))
    old, _latest = _versions(store, "2024-01-01", 2)
    table = make_table(50, salt="v0")  # old's rows
    held, release = threading.Event(), threading.Event()

    def hold(name: str) -> None:
        held.set()
        assert release.wait(60)

    result: dict[str, Any] = {}
    if publish_first:
        monkeypatch.setattr(publish_module, "_step", lambda name: hold(name) if name == "parts_placed" else None)
        racer = threading.Thread(target=lambda: result.update(again=publish(store, table, partition="2024-01-02")))
        racer.start()
        assert held.wait(60)  # every part of old found present, the manifest not yet written
        done = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
        assert done.items[0].deleted and done.sweep.parts == ()  # the intent kept every part
        release.set()
        racer.join(60)
    else:
        monkeypatch.setattr(retention, "_sweep_step", hold)
        gc = threading.Thread(target=lambda: result.update(done=retention.apply_retention(
            store, 1, None, set(), grace=retention.dt.timedelta(0))))
        gc.start()
        assert held.wait(60)  # old's manifest deleted, its parts moved aside
        assert not any(p.exists() for p in _part_files(store, old))
        result["again"] = publish(store, table, partition="2024-01-02")
        release.set()
        gc.join(60)
        assert result["done"].sweep.parts == ()  # gc saw the new manifest and deleted nothing
    again = result["again"]
    assert again.created and again.version == old.version
    assert store.verify_version(store.read_manifest(ASSET, "2024-01-02", again.version)) == []
    assert store.read_table(ASSET, "2024-01-02").num_rows == 50
    assert not list((tmp_path / "storage" / ".intents").iterdir())
    assert not [p for p in (tmp_path / "storage" / ".staging").iterdir()]


def test_a_killed_publishers_parts_are_kept_by_its_intent_until_gc_removes_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A publisher killed between placing its parts and its manifest leaves the parts and its intent:
    the sweep keeps them; gc --older-than removes the idle intent, and then (the same run) the parts
    no manifest references; retention's sweep would have deleted them as well."""
    import datetime as dt

    from snapshot_platform.store.gc import collect_garbage

    store = SnapshotStore(str(tmp_path / "storage"))
    kept = publish(store, make_table(40)).manifest

    def killed(name: str) -> None:
        raise SystemExit("killed before the manifest")

    with monkeypatch.context() as m:
        m.setattr(publish_module, "_step", killed)
        m.setattr(retention, "remove_intent", lambda *a: None)  # killed: its finally never ran
        with pytest.raises(SystemExit):
            publish(store, make_table(30, salt="torn"), partition="2024-01-02")
    orphans = {p.name for p in (tmp_path / "storage" / "parts").rglob("*.parquet")} - {
        f"{f.sha256}.parquet" for f in kept.files}
    assert orphans and len(list((tmp_path / "storage" / ".intents").iterdir())) == 1

    zero = dt.timedelta(0)
    assert retention.apply_retention(store, 1, None, set(), grace=zero).sweep.parts == ()  # the intent keeps them
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    assert retention.apply_retention(store, 1, None, set(), dry_run=True, grace=zero).sweep.parts == ()
    dry = collect_garbage(store, dt.timedelta(hours=24), dry_run=True, now=later)
    assert [(f.kind, f.stale, f.removed) for f in dry] == [("intent", True, False)]  # its parts still held
    found = collect_garbage(store, dt.timedelta(hours=24), now=later)
    assert [(f.kind, f.stale, f.removed) for f in found] == [("intent", True, True)] + [
        ("unreferenced_part", True, True)] * len(orphans)
    assert {f.uri.rsplit("/", 1)[1] for f in found[1:]} == orphans
    assert not {p.name for p in (tmp_path / "storage" / "parts").rglob("*.parquet")} & orphans
    assert store.verify_version(kept) == [] and store.versions(ASSET, "2024-01-02") == []


def test_a_manifest_that_names_no_parts_stops_the_sweep_not_the_gc(tmp_path: Path) -> None:
    """A manifest that is not JSON cannot say which parts it references: gc deletes the versions the
    policy lets go, deletes no part, and exits 1 saying why."""
    store = SnapshotStore(str(tmp_path / "storage"))
    old, _latest = _versions(store, "2024-01-01", 2)
    broken = _versions(store, "2024-01-02", 1)[0]
    (Path(str(store.version_dir(ASSET, "2024-01-02", broken.version))) / "manifest.json").write_text("{not json")
    res = CliRunner().invoke(main, ["--storage", str(tmp_path / "storage"), "gc", "--keep-last", "1", "--grace", "0",
                                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert [d["version"] for d in report["deleted"]] == [old.version] and report["parts_deleted"] == 0
    assert "2024-01-02" in report["parts_not_swept"] and "no part was deleted" in report["parts_not_swept"]
    assert all(p.exists() for p in _part_files(store, old))


def test_an_intent_unreadable_after_the_parts_went_aside_puts_them_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(str(tmp_path / "storage"))
    old, latest = _versions(store, "2024-01-01", 2)
    intents = tmp_path / "storage" / ".intents"

    def damage(_name: str) -> None:  # while the candidates are aside, an intent nobody can read appears
        intents.mkdir(exist_ok=True)
        (intents / "broken.json").write_text("{half an intent")

    monkeypatch.setattr(retention, "_sweep_step", damage)
    done = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
    assert done.items[0].deleted and done.sweep.parts == () and "broken.json" in done.sweep.skipped
    assert all(p.exists() for p in _part_files(store, old))  # back in place, not deleted
    assert store.verify_version(latest) == []
