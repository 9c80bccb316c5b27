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
from snapshot_platform.store import SnapshotStore, retention
from snapshot_platform.training.lock import LOCK_NAME, LockEntry, SnapshotLock
from snapshot_platform.training.mlflow_logging import MlflowTracking
from snapshot_platform.training.reproduce import locked_manifests
from snapshot_platform_tests.store_writes import ASSET, make_table, publish


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
        items=retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))))
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


def test_gc_deletes_the_manifest_before_the_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(str(tmp_path / "storage"))
    old, _ = _versions(store, "2024-01-01", 2)
    seen: list[tuple[bool, bool]] = []
    folder = Path(str(store.version_dir(ASSET, "2024-01-01", old.version)))
    monkeypatch.setattr(retention, "_step", lambda name, _i: seen.append(
        (name, (folder / "manifest.json").exists(), any(folder.glob("*.parquet")))))
    (item,) = retention.apply_retention(store, 1, None, set(), grace=retention.dt.timedelta(0))
    assert item.deleted
    assert seen == [("checked", True, True), ("manifest_deleted", False, True)]
    assert not folder.exists() and [m.version for m in store.versions(ASSET, "2024-01-01")] == [_.version]
