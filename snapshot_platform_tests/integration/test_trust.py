"""Trust: a version proves itself, and the training gate holds everywhere.

Section 1 tampers with published versions the way an accident or a hand edit would (a manifest
copied into another partition, a part replaced together with its hash, row counts edited together,
a failed blocking check flipped to passed, a stray file, malformed and hostile manifests) and shows
that ``verify``, the store's readers (the IO manager's and the training loader's path) and
``list`` catch each one by name and go on with the other versions.

Section 2: the model's automation never requests a partition whose window holds a failed version
(the failed partition in the middle of the window), check results are recorded per partition,
``snapshot`` exits 1 on a failed blocking check, and partition keys outside the catalog, not yet
closed or not canonical are refused naming the expected form.

Snapshots come from a real SQLite source (section 1, the CLI) and a real PostgreSQL (Dagster).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize

from snapshot_platform_tests.conftest import reader_url
from snapshot_platform.catalog import load_catalog, parse_catalog
from snapshot_platform.orchestration.definitions import build_assets, build_definitions, build_resources
from snapshot_platform.gate import UntrainableSnapshot
from snapshot_platform.orchestration.partitions import PartitionKeyError, window_for
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform_tests.store_writes import old_layout
from snapshot_platform.store import MANIFEST_NAME, IntegrityError, Manifest, ManifestError, SnapshotStore
from snapshot_platform.training.train import train

_SCRIPT = Path(sys.executable).parent / "snapshot-platform"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "snapshot_platform.cli"]
NAME = "orders"
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
QUERY = ("SELECT order_id, day, amount, paid FROM orders "
         "WHERE day >= date(:partition_start) AND day < date(:partition_end)")


# ---------------------------------------------------------------- a SQLite-backed platform


class Trust:
    def __init__(self, base: Path):
        self.base = base
        self.db = base / "source.sqlite"
        self.storage = base / "storage"
        self.catalog_path = base / "snapshots.yaml"
        with sqlite3.connect(self.db) as conn:
            conn.execute("CREATE TABLE orders (order_id INTEGER, day TEXT NOT NULL, amount REAL, paid INTEGER)")
            oid = 1
            for d in DAYS:
                for _ in range(40):
                    conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (oid, d, oid % 17 + 0.5, oid % 3 == 0))
                    oid += 1
        self.catalog_path.write_text(yaml.safe_dump({
            "sources": {"db": {"kind": "sqlite", "path": str(self.db), "statement_timeout_s": 30}},
            "snapshots": {NAME: {
                "source": "db", "query": QUERY, "key": ["order_id"], "not_null": ["order_id", "amount"],
                "partitions": {"cadence": "daily", "start": DAYS[0], "end": "2024-03-08"},
            }},
            "models": {"paid": {
                "snapshot": NAME, "partitions": 1, "features": ["amount"], "target": "paid",
                "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
                "split": {"test_fraction": 0.25, "by": "order_id"},
            }},
        }, sort_keys=False))
        self.catalog = load_catalog(self.catalog_path)
        self.store = SnapshotStore(self.storage)

    def sql(self, statement: str) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute(statement)

    def snap(self, day: str) -> Manifest:
        return take_snapshot(self.catalog, NAME, day, self.store).result.manifest

    def folder(self, m: Manifest, partition: str | None = None) -> Path:
        return self.storage / "snapshots" / NAME / (partition or m.partition) / m.version

    def edit(self, m: Manifest, change: Any, partition: str | None = None) -> None:
        path = self.folder(m, partition) / MANIFEST_NAME
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc, indent=2))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SNAPSHOT_PLATFORM")}
        env.update(SNAPSHOT_PLATFORM_STORAGE_URL=str(self.storage), SNAPSHOT_PLATFORM_CATALOG=str(self.catalog_path),
                   SNAPSHOT_PLATFORM_HOME=str(self.base / "home"), PYTHONWARNINGS="ignore")
        return subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=180, cwd=self.base)

    def train(self, manifests: list[Manifest]) -> Any:
        return train("paid", self.catalog.models["paid"], manifests, self.store, key=["order_id"])


@pytest.fixture
def trust(tmp_path: Path) -> Trust:
    return Trust(tmp_path)


def verify_problems(t: Trust) -> tuple[int, str]:
    proc = t.cli("verify", NAME)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


# ---------------------------------------------------------------- 1. a version must prove itself


def test_an_intact_store_verifies_and_trains(trust):
    ms = [trust.snap(d) for d in DAYS[:2]]
    assert all(trust.store.verify_version(m) == [] for m in ms)
    code, out = verify_problems(trust)
    assert code == 0, out
    assert trust.train([ms[0]]).metrics


def test_a_version_in_the_layout_before_shared_parts_verifies_trains_and_is_refused_when_damaged(trust):
    """Format 2 (its parts in its version folder): verify and the training loader (the IO manager
    reads through the same store readers) hold it to the same rules as format 3."""
    m = old_layout(trust.store, trust.snap(DAYS[0]))
    assert m.format_version == 2 and (trust.folder(m) / "part-00000.parquet").exists()
    code, out = verify_problems(trust)
    assert code == 0, out
    assert trust.train([m]).metrics
    part = trust.folder(m) / "part-00000.parquet"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    part.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="part-00000.parquet"):
        trust.train([m])
    code, out = verify_problems(trust)
    assert code == 1 and "part-00000.parquet" in out and "sha256" in out


def test_a_manifest_copied_into_another_partition_is_refused_everywhere(trust):
    m04 = trust.snap(DAYS[3])
    target = trust.folder(m04, DAYS[4])  # partition 05 "has" partition 04's version and rows
    shutil.copytree(trust.folder(m04), target)

    with pytest.raises(ManifestError, match=rf"describes {NAME}/{DAYS[3]}.*sits in {NAME}/{DAYS[4]}"):
        trust.store.read_manifest(NAME, DAYS[4], m04.version)
    with pytest.raises(ManifestError, match="sits in"):
        trust.store.read_table(NAME, DAYS[4])  # the IO manager's path, the latest-in-storage fallback
    assert trust.store.versions(NAME, DAYS[4]) == []
    assert trust.store.versions(NAME, DAYS[3])[0].version == m04.version

    code, out = verify_problems(trust)
    assert code == 1
    assert f"{DAYS[4]}/{m04.version}/manifest.json" in out and "sits in" in out
    assert f"ok     {NAME}/{DAYS[3]}/{m04.version}" in out  # the genuine one still verifies
    listed = trust.cli("list", NAME)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert f"{NAME}/{DAYS[3]}  {m04.version}" in listed.stdout
    assert f"{DAYS[4]}/{m04.version}/manifest.json" in listed.stderr
    assert f"{NAME}/{DAYS[4]}" not in listed.stdout


def _replace_part(trust: Trust, m: dict[str, Any], table: pa.Table) -> None:
    """The forger writes a part of their own as a shared part (named by its hash) and points the
    manifest at it, with its hash and size."""
    import hashlib

    forged = trust.folder(m).parent / "forged.parquet"
    pq.write_table(table, forged, compression="zstd")
    data = forged.read_bytes()
    forged.unlink()
    sha = hashlib.sha256(data).hexdigest()
    part = Path(str(trust.store.root)) / "parts" / sha[:2] / f"{sha}.parquet"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)

    def change(doc: dict[str, Any]) -> None:
        doc["files"][0].update(path=f"parts/{sha[:2]}/{sha}.parquet", sha256=sha, bytes=len(data))

    trust.edit(m, change)


def test_a_part_replaced_together_with_its_hash_breaks_the_version_id(trust):
    m = trust.snap(DAYS[0])
    original = trust.store.read_table(NAME, DAYS[0])
    forged = original.set_column(2, "amount", pa.array([999.0] * original.num_rows))
    _replace_part(trust, m, forged)

    [problem] = trust.store.verify_version(trust.store.read_manifest(NAME, DAYS[0], m.version))
    assert "version id is not the digest" in problem and m.version in problem
    with pytest.raises(IntegrityError, match="version id"):
        trust.store.read_table(NAME, DAYS[0], m.version)
    with pytest.raises(IntegrityError, match="version id"):
        trust.train([trust.store.read_manifest(NAME, DAYS[0], m.version)])
    code, out = verify_problems(trust)
    assert code == 1 and "version id" in out


def test_row_counts_edited_together_are_caught_by_the_parquet_footers(trust):
    m = trust.snap(DAYS[0])

    def change(doc: dict[str, Any]) -> None:
        doc["row_count"] += 5
        doc["files"][0]["rows"] += 5

    trust.edit(m, change)
    edited = trust.store.read_manifest(NAME, DAYS[0], m.version)
    [problem] = trust.store.verify_version(edited)
    assert "40 rows in its Parquet footer, manifest says 45" in problem
    with pytest.raises(IntegrityError, match="Parquet footer"):
        list(trust.store.iter_batches(edited))
    assert verify_problems(trust)[0] == 1


def test_a_failed_blocking_check_flipped_to_passed_is_an_integrity_error(trust):
    trust.sql(f"INSERT INTO orders SELECT * FROM orders WHERE order_id = 7")
    m = trust.snap(DAYS[0])
    assert m.checks["key_unique"].passed is False
    with pytest.raises(UntrainableSnapshot):
        trust.train([m])

    trust.edit(m, lambda doc: doc["checks"]["key_unique"].update(passed=True))
    edited = trust.store.read_manifest(NAME, DAYS[0], m.version)
    problems = trust.store.verify_version(edited)
    assert any("key_unique is recorded as passed, but the rows say 1 rows repeat a key" in p for p in problems)
    with pytest.raises(IntegrityError, match="key_unique is recorded as passed"):
        trust.train([edited])  # the refused version does not train after the edit either
    code, out = verify_problems(trust)
    assert code == 1 and "key_unique is recorded as passed" in out

    # every other way of hiding the failure: details too, the whole record, the blocking flag
    def hide(doc: dict[str, Any]) -> None:
        doc["checks"]["key_unique"].update(passed=True, details={"key": ["order_id"], "duplicate_rows": 0})

    trust.edit(m, hide)
    with pytest.raises(IntegrityError, match="key_unique is recorded as passed"):
        trust.train([trust.store.read_manifest(NAME, DAYS[0], m.version)])
    trust.edit(m, lambda doc: doc.pop("checks"))
    with pytest.raises(IntegrityError, match="records no outcome of blocking check key_unique"):
        trust.train([trust.store.read_manifest(NAME, DAYS[0], m.version)])


def test_not_null_and_min_rows_are_re_derived_from_the_rows(trust):
    trust.sql(f"UPDATE orders SET amount = NULL WHERE order_id IN (3, 4)")
    m = trust.snap(DAYS[0])
    assert m.checks["not_null"].passed is False
    assert m.checks["not_null"].details["columns"] == ["order_id", "amount"]

    def hide(doc: dict[str, Any]) -> None:
        doc["checks"]["not_null"].update(passed=True, details={"columns": ["order_id", "amount"], "null_rows": {}})
        doc["checks"]["min_rows"]["details"]["min_rows"] = 41  # and claim 40 rows passed a minimum of 41

    trust.edit(m, hide)
    problems = trust.store.verify_version(trust.store.read_manifest(NAME, DAYS[0], m.version))
    assert any("not_null is recorded as passed, but the rows say NULLs in amount (2 rows)" in p for p in problems)
    assert any("min_rows is recorded as passed, but the rows say 40 rows (at least 41 required)" in p
               for p in problems)


def test_a_stray_parquet_file_in_a_version_folder_is_reported(trust):
    m = trust.snap(DAYS[0])
    pq.write_table(pa.table({"order_id": [1]}), trust.folder(m) / "part-00001.parquet")
    [problem] = trust.store.verify_version(m)
    assert problem.endswith("part-00001.parquet: not listed in the manifest")
    with pytest.raises(IntegrityError, match="not listed"):
        trust.store.read_table(NAME, DAYS[0])
    code, out = verify_problems(trust)
    assert code == 1 and "part-00001.parquet: not listed in the manifest" in out


@pytest.mark.parametrize("damage", ["bad_json", "hostile_partition", "missing_field", "wrong_types"])
def test_one_malformed_manifest_is_named_and_the_rest_goes_on(trust, damage):
    ms = [trust.snap(d) for d in DAYS[:3]]
    bad = ms[1]
    path = trust.folder(bad) / MANIFEST_NAME
    if damage == "bad_json":
        path.write_text("{not json")
    elif damage == "hostile_partition":
        trust.edit(bad, lambda doc: doc.update(partition="../../x"))
    elif damage == "missing_field":
        trust.edit(bad, lambda doc: doc.pop("row_count"))
    else:
        trust.edit(bad, lambda doc: doc["files"][0].update(rows="40"))

    code, out = verify_problems(trust)
    assert code == 1
    assert f"{DAYS[1]}/{bad.version}/manifest.json" in out
    for good in (ms[0], ms[2]):
        assert f"ok     {NAME}/{good.partition}/{good.version}" in out
    listed = trust.cli("list", NAME, "--json")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert [r["partition"] for r in json.loads(listed.stdout)] == [DAYS[0], DAYS[2]]
    assert f"{DAYS[1]}/{bad.version}/manifest.json" in listed.stderr
    assert trust.cli("list").returncode == 1
    # a later snapshot reads the earlier partitions' history and goes on
    later = trust.snap(DAYS[3])
    assert later.checks["schema_unchanged"].details["compared_with"] == DAYS[2]
    assert trust.cli("verify", NAME).returncode == 1  # still named, until someone looks at it
    with pytest.raises(ManifestError, match="manifest.json"):
        trust.store.read_table(NAME, DAYS[1])


# ---------------------------------------------------------------- 2. the gate holds everywhere: CLI and keys


def test_snapshot_exits_1_on_a_failed_blocking_check_and_keeps_the_evidence(trust):
    trust.sql("INSERT INTO orders SELECT * FROM orders WHERE order_id = 7")
    proc = trust.cli("snapshot", NAME, DAYS[0])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "key_unique" in proc.stderr and "not trainable" in proc.stderr
    assert "published version" in proc.stdout
    assert trust.store.latest(NAME, DAYS[0]).checks["key_unique"].passed is False
    assert trust.cli("snapshot", NAME, DAYS[1]).returncode == 0  # a clean partition: 0


@pytest.mark.parametrize("key, expected", [
    ("2024-3-5", r"'2024-3-5' is not a canonical daily partition key: expected YYYY-MM-DD"),
    ("2024-02-29", r"before the catalog's start 2024-03-01: expected a daily key \(YYYY-MM-DD\)"),
    ("2024-03-08", r"ends after the catalog's end 2024-03-08"),
    ("not-a-day", r"'not-a-day' is not a daily partition key: expected YYYY-MM-DD \(like '2024-03-01'\)"),
])
def test_partition_keys_outside_the_catalog_or_not_canonical_are_refused(trust, key, expected):
    with pytest.raises(PartitionKeyError, match=expected):
        window_for(trust.catalog.snapshots[NAME].partitions, key)
    proc = trust.cli("snapshot", NAME, key)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "YYYY-MM-DD" in proc.stderr or "2024-03-08" in proc.stderr
    assert not (trust.storage / "snapshots" / NAME / key).exists()


def test_a_window_that_has_not_closed_is_refused_unless_asked_for(trust):
    spec = parse_catalog({
        "sources": {"db": {"kind": "sqlite", "path": str(trust.db)}},
        "snapshots": {NAME: {"source": "db", "query": QUERY, "key": ["order_id"],
                             "partitions": {"cadence": "weekly", "start": "2024-03-03"}}},
    }).snapshots[NAME].partitions
    now = dt.datetime(2024, 3, 13, 12, tzinfo=dt.timezone.utc)
    assert window_for(spec, "2024-03-03", now=now).end == dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
    with pytest.raises(PartitionKeyError, match="has not closed yet.*--allow-open-window"):
        window_for(spec, "2024-03-10", now=now)
    assert window_for(spec, "2024-03-10", now=now, allow_open=True).start.day == 10
    with pytest.raises(PartitionKeyError, match="'2024-03-05' is not a canonical weekly.*would be read as '2024-03-10'"):
        window_for(spec, "2024-03-05", now=now)

    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    catalog = yaml.safe_load(trust.catalog_path.read_text())
    catalog["snapshots"][NAME]["partitions"].pop("end")
    trust.catalog_path.write_text(yaml.safe_dump(catalog))
    proc = trust.cli("snapshot", NAME, today)
    assert proc.returncode == 2 and "has not closed yet" in proc.stderr, proc.stderr
    trust.sql(f"INSERT INTO orders VALUES (100000, '{today}', 1.5, 1)")
    proc = trust.cli("snapshot", NAME, today, "--allow-open-window")
    assert proc.returncode == 0, proc.stderr
    assert trust.store.latest(NAME, today).row_count == 1


# ---------------------------------------------------------------- 2. the gate holds everywhere: Dagster


def _pg_orders(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (order_id int, day date NOT NULL, amount numeric(10,2), paid int)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", [
                (i, dt.date(2024, 3, 1) + dt.timedelta(days=(i - 1) // 60), i % 50 + 0.5, int(i % 3 == 0))
                for i in range(1, 181)])


def _pg_catalog(url: str) -> Any:
    return parse_catalog({
        "sources": {"pg": {"kind": "postgres", "url": reader_url(url), "statement_timeout_s": 30}},
        "snapshots": {NAME: {
            "source": "pg", "key": ["order_id"], "not_null": ["order_id", "amount"],
            "query": "SELECT * FROM orders WHERE day >= :partition_start AND day < :partition_end",
            "partitions": {"cadence": "daily", "start": DAYS[0]},
        }},
        "models": {"paid": {
            "snapshot": NAME, "partitions": 3, "features": ["amount"], "target": "paid",
            "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
        }},
    })


def test_automation_never_requests_a_window_holding_a_failed_version(pg_database, platform_env):
    """Three-partition window 03-01..03-03 with 03-02 (the middle) failing key_unique: the model
    partition 03-03 is not requested, although its own snapshot partition passed."""
    from dagster import evaluate_automation_conditions

    _pg_orders(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 70")  # day 2
    catalog = _pg_catalog(pg_database)
    defs = build_definitions(catalog, storage_url=str(platform_env.storage))
    instance = DagsterInstance.get()
    model = AssetKey(["models", "paid"])
    tick = dt.datetime(2024, 3, 4, 6, tzinfo=dt.timezone.utc)  # latest complete day: 03-03
    cursor = None

    def requested() -> set[str]:
        nonlocal tick, cursor
        tick += dt.timedelta(minutes=1)
        result = evaluate_automation_conditions(defs, instance, evaluation_time=tick, cursor=cursor)
        cursor = result.cursor
        return set(result.get_requested_partitions(model))

    def snapshot(day: str) -> bool:
        return materialize(build_assets(catalog), selection=[AssetKey(["snapshots", NAME])], partition_key=day,
                           instance=instance, resources=build_resources(str(platform_env.storage)),
                           raise_on_error=False).success

    assert requested() == set()
    for day, passes in ((DAYS[0], True), (DAYS[1], False), (DAYS[2], True)):  # as the schedule runs them
        assert snapshot(day) is passes
        assert requested() == set(), f"after {day}: the window 03-01..03-03 holds a failed version"
    for day in (DAYS[2], DAYS[0]):  # re-snapshots of the passing ends, later than the failure
        assert snapshot(day)
        assert requested() == set()
    # once 03-02 gets a version that passes, the model partition is requested
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE ctid = (SELECT max(ctid) FROM orders WHERE order_id = 70)")
    assert snapshot(DAYS[1])
    assert requested() == {DAYS[2]}


def test_check_results_are_recorded_per_partition_without_phantom_rows(pg_database, platform_env):
    from dagster import AssetCheckKey

    _pg_orders(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("INSERT INTO orders SELECT * FROM orders WHERE order_id = 70")  # day 2 only
    catalog = _pg_catalog(pg_database)
    instance = DagsterInstance.get()
    for day in DAYS[:2]:
        materialize(build_assets(catalog), selection=[AssetKey(["snapshots", NAME])], partition_key=day,
                    instance=instance, resources=build_resources(str(platform_env.storage)), raise_on_error=False)
    key = AssetCheckKey(AssetKey(["snapshots", NAME]), "key_unique")
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=20)
    by_partition = {r.partition: r for r in records}
    assert sorted(by_partition, key=str) == DAYS[:2], [(r.partition, r.status) for r in records]
    assert len(records) == 2, "one record per run and partition: no planned row without a partition"
    assert by_partition[DAYS[0]].status.value == "SUCCEEDED"
    assert by_partition[DAYS[1]].status.value == "FAILED"
    evaluation = by_partition[DAYS[1]].event.dagster_event.event_specific_data
    assert evaluation.partition == DAYS[1] and evaluation.passed is False
