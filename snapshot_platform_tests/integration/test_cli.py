"""The ``snapshot-platform`` command, driven as a user drives it: a subprocess per call.

A store is populated through ``snapshot-platform snapshot`` from a generated SQLite source (the
demo's generator) with a catalog in a temporary folder; every home the platform knows
(``SNAPSHOT_PLATFORM_HOME``, storage, catalog, ``DAGSTER_HOME``) points into temporary folders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from snapshot_platform.demo import source_db
from snapshot_platform.store import SnapshotStore

_SCRIPT = Path(sys.executable).parent / "snapshot-platform"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "snapshot_platform.cli"]
NAME = "customer_data"
SUBCOMMANDS = ("demo", "snapshot", "list", "show", "verify", "gc")

QUERY = (
    "SELECT customer_id, signup_date, country, total_purchases, avg_order_value, tenure_days, churn_label\n"
    "FROM customers\n"
    "WHERE signup_date >= date(:partition_start) AND signup_date < date(:partition_end)\n"
)


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SNAPSHOT_PLATFORM_") and k != "DAGSTER_HOME"}
    env.update(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


@dataclass
class Platform:
    base: Path
    db: Path
    catalog: Path
    storage: Path
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        settings = {
            "SNAPSHOT_PLATFORM_HOME": str(self.home),
            "SNAPSHOT_PLATFORM_STORAGE_URL": str(self.storage),
            "SNAPSHOT_PLATFORM_CATALOG": str(self.catalog),
        }
        settings.update(extra)
        return clean_environ(**settings)

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, *args], env=self.env(**extra_env), capture_output=True, text=True,
                              timeout=180, cwd=self.base)

    def json(self, *args: str) -> object:
        proc = self.run(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def rows_in_db(self, day: str) -> int:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT count(*) FROM customers WHERE signup_date = ?", (day,)).fetchone()[0]

    def copy(self, dest: Path) -> "Platform":
        """The same catalog and source, with a private copy of the storage (for destructive tests)."""
        dest.mkdir(parents=True, exist_ok=True)
        storage = dest / "storage"
        shutil.copytree(self.storage, storage)
        return Platform(dest, self.db, self.catalog, storage, dest / "home")


def make_platform(base: Path) -> Platform:
    base.mkdir(parents=True, exist_ok=True)
    db = base / "source" / "production.sqlite"
    source_db.create(db)
    catalog = base / "snapshots.yaml"
    catalog.write_text(yaml.safe_dump({
        "sources": {"demo_db": {"kind": "sqlite", "path": str(db), "statement_timeout_s": 60}},
        "snapshots": {NAME: {
            "source": "demo_db",
            "query": QUERY,
            "partitions": {"cadence": "daily", "start": "2024-01-01", "end": "2024-01-08"},
            "key": ["customer_id"],
            "not_null": ["customer_id", "signup_date"],
        }},
    }, sort_keys=False))
    return Platform(base, db, catalog, base / "storage", base / "home")


@dataclass
class Populated:
    platform: Platform
    first_0101: str
    first_0102: str
    second_0102: str
    snapshot_outputs: list[str]


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Populated:
    """Two partitions, one of them in two versions (the source changed in between)."""
    platform = make_platform(tmp_path_factory.mktemp("cli"))
    outputs = []

    def snap(day: str) -> str:
        proc = platform.run("snapshot", NAME, day)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
        m = re.search(r"version ([0-9a-f]{20})", proc.stdout)
        assert m, proc.stdout
        return m.group(1)

    v0101 = snap("2024-01-01")
    v0102 = snap("2024-01-02")
    source_db.evolve(platform.db)  # churn labels change for 2024-01-02 signups
    v0102b = snap("2024-01-02")
    return Populated(platform, v0101, v0102, v0102b, outputs)


@pytest.fixture
def platform(populated: Populated) -> Platform:
    return populated.platform


# ------------------------------------------------------------------ --help


def test_main_help_lists_every_subcommand(tmp_path):
    proc = make_platform_light(tmp_path).run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    for sub in SUBCOMMANDS:
        assert re.search(rf"^\s+{sub}\s", proc.stdout, re.M), f"{sub} missing from --help"


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(tmp_path, sub):
    proc = make_platform_light(tmp_path).run(sub, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: " in proc.stdout and f" {sub}" in proc.stdout.splitlines()[0]
    assert "--help" in proc.stdout
    if sub != "demo":
        assert "--json" in proc.stdout
    if sub == "show":
        assert "--version" in proc.stdout
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())


def make_platform_light(base: Path) -> Platform:
    """Homes in tmp, no source database: for commands that must not need one."""
    return Platform(base, base / "none.sqlite", base / "none.yaml", base / "storage", base / "home")


# ------------------------------------------------------------------ snapshot


def test_snapshot_publishes_then_recognises_unchanged_data(populated):
    first, second, after_change = populated.snapshot_outputs
    assert f"{NAME}/2024-01-01: published version {populated.first_0101}" in first
    assert f"({populated.platform.rows_in_db('2024-01-01')} rows" in first
    assert "published version" in after_change and populated.second_0102 != populated.first_0102

    proc = populated.platform.run("snapshot", NAME, "2024-01-01")
    assert proc.returncode == 0, proc.stderr
    assert f"unchanged, already published as version {populated.first_0101}" in proc.stdout


def test_snapshot_json(platform, populated):
    out = platform.json("snapshot", NAME, "2024-01-01")
    assert out["created"] is False
    m = out["manifest"]
    assert m["version"] == populated.first_0101
    assert m["asset"] == NAME and m["partition"] == "2024-01-01"
    assert m["row_count"] == platform.rows_in_db("2024-01-01")
    assert m["window"] == {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"}
    assert m["source"]["kind"] == "sqlite" and m["dagster_run_id"] is None


def test_snapshot_of_unknown_name_or_partition_fails_cleanly(platform):
    proc = platform.run("snapshot", "no_such_snapshot", "2024-01-01")
    assert proc.returncode != 0
    assert "no_such_snapshot" in proc.stderr and "Traceback" not in proc.stderr
    proc = platform.run("snapshot", NAME, "2023-06-01")
    assert proc.returncode != 0
    assert "2023-06-01" in proc.stderr and "Traceback" not in proc.stderr
    proc = platform.run("snapshot", NAME, "not-a-date")
    assert proc.returncode != 0
    assert "not-a-date" in proc.stderr and "Traceback" not in proc.stderr


def test_snapshot_with_a_bad_catalog_names_file_entry_field(tmp_path, platform):
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load(platform.catalog.read_text())
    doc["snapshots"][NAME]["partitions"]["cadence"] = "yearly"
    bad.write_text(yaml.safe_dump(doc))
    proc = platform.run("snapshot", NAME, "2024-01-01", SNAPSHOT_PLATFORM_CATALOG=str(bad))
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and f"snapshots.{NAME}" in proc.stderr
    assert "field 'partitions.cadence'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_snapshot_with_an_unreachable_source_fails_cleanly(tmp_path, platform):
    """A source error (here: the SQLite file does not exist) is a user-facing error like a catalog
    error: a one-line message and a non-zero exit, not a Python traceback (cli.py only turns
    CatalogError and ValueError into messages; SourceError escapes)."""
    doc = yaml.safe_load(platform.catalog.read_text())
    missing = tmp_path / "gone.sqlite"
    doc["sources"]["demo_db"]["path"] = str(missing)
    cat = tmp_path / "gone.yaml"
    cat.write_text(yaml.safe_dump(doc))
    proc = platform.run("snapshot", NAME, "2024-01-01", SNAPSHOT_PLATFORM_CATALOG=str(cat),
                        SNAPSHOT_PLATFORM_STORAGE_URL=str(tmp_path / "storage"))
    assert proc.returncode != 0
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-400:]


# ------------------------------------------------------------------ list


def test_list_all(platform):
    proc = platform.run("list")
    assert proc.returncode == 0, proc.stderr
    assert f"{NAME}: 2 partitions, 3 versions, latest partition 2024-01-02" in proc.stdout


def test_list_all_json(platform):
    assert platform.json("list") == [
        {"asset": NAME, "partitions": 2, "versions": 3, "latest_partition": "2024-01-02"}
    ]


def test_list_name(platform, populated):
    proc = platform.run("list", NAME)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 3
    assert lines[0].startswith(f"{NAME}/2024-01-01  {populated.first_0101}")
    assert lines[1].startswith(f"{NAME}/2024-01-02  {populated.first_0102}")  # oldest first
    assert lines[2].startswith(f"{NAME}/2024-01-02  {populated.second_0102}")
    assert f"{platform.rows_in_db('2024-01-01')} rows" in lines[0]


def test_list_name_json(platform, populated):
    rows = platform.json("list", NAME)
    assert [(r["partition"], r["version"]) for r in rows] == [
        ("2024-01-01", populated.first_0101),
        ("2024-01-02", populated.first_0102),
        ("2024-01-02", populated.second_0102),
    ]
    assert rows[0]["row_count"] == platform.rows_in_db("2024-01-01")
    assert all(r["dagster_run_id"] is None and r["created_at"] for r in rows)
    assert rows[1]["created_at"] <= rows[2]["created_at"]


def test_list_of_empty_storage(tmp_path):
    p = make_platform_light(tmp_path)
    proc = p.run("list")
    assert proc.returncode == 0 and "no snapshots" in proc.stdout
    assert p.json("list") == []
    # neither a catalog nor the storage knows NAME: a usage error (exit 2), not an empty listing
    proc = p.run("list", NAME)
    assert proc.returncode == 2 and f"unknown snapshot {NAME!r}" in proc.stderr


def test_list_with_a_hostile_name_fails_cleanly(platform):
    proc = platform.run("list", "../etc")
    assert proc.returncode != 0
    assert "../etc" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-400:]


# ------------------------------------------------------------------ show


def test_show_latest(platform, populated):
    proc = platform.run("show", NAME, "2024-01-02")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{NAME}/2024-01-02 version {populated.second_0102}" in out
    assert "window      [2024-01-02T00:00:00+00:00, 2024-01-03T00:00:00+00:00)" in out
    assert f"rows        {platform.rows_in_db('2024-01-02')}" in out
    assert "parts/" in out and ".parquet" in out and "sha256" in out
    for column in ("customer_id", "signup_date", "churn_label"):
        assert column in out


def test_show_json_is_the_manifest_on_disk(platform, populated):
    m = platform.json("show", NAME, "2024-01-02")
    on_disk = json.loads(
        (platform.storage / "snapshots" / NAME / "2024-01-02" / populated.second_0102 / "manifest.json").read_text()
    )
    assert m == on_disk
    assert m["version"] == populated.second_0102
    assert [c["name"] for c in m["schema"]] == [
        "customer_id", "signup_date", "country", "total_purchases", "avg_order_value", "tenure_days", "churn_label"]


def test_show_a_chosen_version(platform, populated):
    proc = platform.run("show", NAME, "2024-01-02", "--version", populated.first_0102)
    assert proc.returncode == 0, proc.stderr
    assert f"version {populated.first_0102}" in proc.stdout
    assert populated.second_0102 not in proc.stdout
    m = platform.json("show", NAME, "2024-01-02", "--version", populated.first_0102)
    assert m["version"] == populated.first_0102 and m["partition"] == "2024-01-02"


def test_show_a_missing_version_fails_clearly(platform):
    proc = platform.run("show", NAME, "2024-01-02", "--version", "0000000000deadbeef00")
    assert proc.returncode != 0
    assert "0000000000deadbeef00" in proc.stderr and "no published version" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = platform.run("show", NAME, "2024-01-02", "--version", "0000000000deadbeef00", "--json")
    assert proc.returncode != 0 and proc.stdout.strip() == ""


def test_show_a_partition_never_snapshotted_fails_clearly(platform):
    proc = platform.run("show", NAME, "2024-01-05")
    assert proc.returncode != 0
    assert "2024-01-05" in proc.stderr and "no published version" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_show_rejects_hostile_arguments(platform):
    for args in (("../..", "2024-01-01"), (NAME, "../../etc"), (NAME, "2024-01-01", "--version", "../x")):
        proc = platform.run("show", *args)
        assert proc.returncode != 0, args
        assert "cannot be used as a storage path component" in proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ verify


def test_verify_all_ok(platform, populated):
    proc = platform.run("verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 versions checked, 0 failed" in proc.stdout
    for day, v in (("2024-01-01", populated.first_0101), ("2024-01-02", populated.first_0102),
                   ("2024-01-02", populated.second_0102)):
        assert re.search(rf"^ok\s+{NAME}/{day}/{v}$", proc.stdout, re.M)


def test_verify_json_ok(platform):
    out = platform.json("verify")
    assert out["ok"] is True and out["checked"] == 3
    assert all(r["ok"] and r["problems"] == [] for r in out["results"])
    assert {r["partition"] for r in out["results"]} == {"2024-01-01", "2024-01-02"}
    named = platform.json("verify", NAME)
    assert named["ok"] is True and named["checked"] == 3


def _part(storage: Path, partition: str, version: str) -> Path:
    """The stored file of a version's first part (shared under <storage>/parts/)."""
    store = SnapshotStore(storage)
    m = store.read_manifest(NAME, partition, version)
    return Path(str(store.part_path(m, m.files[0])))


def test_verify_flipped_byte_exits_1_and_names_the_file(tmp_path, populated):
    p = populated.platform.copy(tmp_path / "damaged")
    bad = _part(p.storage, "2024-01-02", populated.first_0102)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))

    proc = p.run("verify")
    assert proc.returncode == 1
    assert str(bad) in proc.stdout
    assert re.search(rf"^FAILED\s+{NAME}/2024-01-02/{populated.first_0102}$", proc.stdout, re.M)
    assert "3 versions checked, 1 failed" in proc.stdout

    proc = p.run("verify", NAME, "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["checked"] == 3
    [failed] = [r for r in out["results"] if not r["ok"]]
    assert failed["version"] == populated.first_0102
    assert any(str(bad) in pr for pr in failed["problems"])
    assert sum(r["ok"] for r in out["results"]) == 2


def test_verify_missing_part_exits_1(tmp_path, populated):
    p = populated.platform.copy(tmp_path / "missing")
    gone = _part(p.storage, "2024-01-01", populated.first_0101)
    gone.unlink()
    proc = p.run("verify", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    [failed] = [r for r in out["results"] if not r["ok"]]
    assert any("missing" in pr and gone.name in pr for pr in failed["problems"])


def test_verify_unknown_name_exits_2(platform):
    proc = platform.run("verify", "no_such_snapshot")
    assert proc.returncode == 2
    assert "unknown snapshot 'no_such_snapshot'" in proc.stderr and NAME in proc.stderr


def test_verify_hostile_name_fails_cleanly(platform):
    proc = platform.run("verify", "../etc")
    assert proc.returncode != 0
    assert "../etc" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-400:]


def test_storage_option_overrides_the_environment(tmp_path, platform):
    empty = tmp_path / "other_storage"
    proc = platform.run("--storage", str(empty), "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# ------------------------------------------------------------------ gc


def _age(folder: Path, days: float) -> None:
    """Make every file under ``folder`` (and the folder) look ``days`` old."""
    import time

    t = time.time() - days * 86_400
    for f in [*folder.rglob("*"), folder]:
        os.utime(f, (t, t))


def test_gc_removes_what_a_killed_writer_left_and_never_a_published_version(tmp_path, populated):
    import signal
    import time

    from snapshot_platform_tests.store_writes import _SLOW_WRITER, manifest_fields

    p = populated.platform.copy(tmp_path / "gc")
    staging = p.storage / ".staging"
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(p.storage), json.dumps(manifest_fields())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "streaming", writer.stderr.read()
        deadline = time.monotonic() + 60
        while not list(staging.rglob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    [killed] = list(staging.iterdir())
    # a version folder whose writer died before its manifest: invisible, reported, kept
    incomplete = p.storage / "snapshots" / NAME / "2024-01-01" / ("0" * 20)
    incomplete.mkdir()
    (incomplete / "part-00000.parquet").write_bytes(b"PAR1 torn")
    _age(incomplete, 3)
    published = sorted(str(f) for f in (p.storage / "snapshots").rglob("*") if f.is_file())

    # a staging folder written to a moment ago belongs to a writer that may be at work: kept
    out = p.json("gc")
    [young] = [x for x in out["leftovers"] if x["kind"] == "staging"]
    assert young["age_s"] < 3600 and young["files"] >= 1 and young["removed"] is False
    assert killed.exists() and out["removed"] == 0

    _age(killed, 2)
    dry = p.run("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert re.search(rf"^would remove\s+staging\s.*{killed.name}$", dry.stdout, re.M), dry.stdout
    assert re.search(rf"^kept .*incomplete_version\s.*{incomplete.name}$", dry.stdout, re.M), dry.stdout
    assert killed.exists()

    out = p.json("gc", "--older-than", "1d")
    by_kind = {x["kind"]: x for x in out["leftovers"]}
    assert by_kind["staging"]["removed"] is True and by_kind["staging"]["bytes"] > 0
    assert by_kind["incomplete_version"]["removed"] is False and by_kind["incomplete_version"]["files"] == 1
    assert out["removed"] == 1 and out["removed_bytes"] == by_kind["staging"]["bytes"]
    assert not killed.exists() and incomplete.exists()
    assert sorted(str(f) for f in (p.storage / "snapshots").rglob("*") if f.is_file()) == published
    verified = p.json("verify")
    assert verified["ok"] is True and verified["checked"] == 3


@pytest.mark.parametrize("bad", ["0h", "-1d", "soon", "12"])
def test_gc_refuses_a_duration_that_is_not_positive(platform, bad):
    proc = platform.run("gc", "--older-than", bad)
    assert proc.returncode == 2
    assert "positive duration" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ the demo, end to end


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    home = tmp_path / "sp_home"
    env = clean_environ(SNAPSHOT_PLATFORM_HOME=str(home))  # no DAGSTER_HOME: the demo picks its own
    proc = subprocess.run([*COMMAND, "demo"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-1500:]}\n{proc.stderr[-1500:]}"

    first = dict(re.findall(r"customer_data/(2024-01-0\d): version ([0-9a-f]{20})\s+\d+ rows\s+new\b", out))
    assert set(first) == {"2024-01-01", "2024-01-02", "2024-01-03"}, out
    # the unchanged re-run: the same version, reported as not new
    rerun = re.findall(r"customer_data/2024-01-01: version ([0-9a-f]{20})[^\n]*"
                       r"(?:new version: False|unchanged|already published)", out)
    assert rerun and set(rerun) == {first["2024-01-01"]}, out
    # the changed partition: a new version
    m = re.search(r"customer_data/2024-01-02: version ([0-9a-f]{20})[^\n]*(?:new version: True|NEW version)", out)
    assert m, out
    changed = m.group(1)
    assert changed != first["2024-01-02"]
    assert f"published versions of 2024-01-02, oldest first: {first['2024-01-02']}, {changed}" in out
    assert (home / "dagster_home").is_dir()  # its own Dagster home, under the platform home
    assert (home / "storage" / "snapshots" / NAME).is_dir()

    list_env = clean_environ(SNAPSHOT_PLATFORM_HOME=str(home))
    proc = subprocess.run([*COMMAND, "list", NAME, "--json"], env=list_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    by_partition: dict[str, list[str]] = {}
    for r in rows:
        by_partition.setdefault(r["partition"], []).append(r["version"])
    assert by_partition["2024-01-02"] == [first["2024-01-02"], changed]
    assert by_partition["2024-01-01"] == [first["2024-01-01"]]
    assert by_partition["2024-01-03"] == [first["2024-01-03"]]

    proc = subprocess.run([*COMMAND, "verify", "--json"], env=list_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["checked"] == 4
