"""Failures mid-snapshot never crash and always say why (disk full, Ctrl-C, SIGTERM, a killed run).

Everything runs as a user runs it: ``snapshot-platform snapshot`` and ``dagster asset materialize`` in
subprocesses, against a real PostgreSQL table bigger than the storage can hold. The interrupt tests
synchronise on what can be observed (``pg_stat_activity`` showing the query waiting on an advisory
lock the test holds, staging files appearing, a marker written by the store), never on sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest
import yaml

from snapshot_platform_tests.cli_runs import dagster_materialize, step_failures
from snapshot_platform_tests.conftest import PlatformEnv, missing_peer

BIN = Path(sys.executable).parent
CLI = [str(BIN / "snapshot-platform")] if (BIN / "snapshot-platform").exists() else [
    sys.executable, "-m", "snapshot_platform.cli"]
PARTITION = "2024-01-01"
ROWS = 300_000
HELD_ID = 250_000  # the streaming query waits on the test's advisory lock at this row
LOCK = 4711
REPO = Path(__file__).resolve().parents[2]

_WINDOW = "ts >= :partition_start AND ts < :partition_end"
_HOLD = f"(id <> {HELD_ID} OR pg_advisory_xact_lock_shared({LOCK})::text IS NOT NULL)"
SNAPSHOTS = {
    # rows leave the server in key order through the primary key's index
    "events": f"SELECT id, ts, payload FROM events WHERE {_WINDOW}",
    # ... and stop at HELD_ID while the test holds the lock: the reader thread waits in the driver
    # (the window is a one-time filter here, so the planner keeps the index's order over a sort)
    "events_held": f"SELECT id, ts, payload FROM events WHERE :partition_start < :partition_end AND {_HOLD}",
    # ordered by an unindexed column: the server sorts first, so it waits before the first row
    "events_sorted": f"SELECT id, ts, payload FROM events WHERE {_WINDOW} AND {_HOLD}",
}


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll observable state until ``predicate()`` is truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def events_db(pg_database: str) -> Iterator[str]:
    """``events``: ROWS rows of hex payload (~10 MB as Parquet), all in the partition 2024-01-01."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events AS SELECT g AS id,"
            " timestamptz '2024-01-01 00:00+00' + (g %% 80000) * interval '1 second' AS ts,"
            " md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, %s) g", (ROWS,))
        conn.execute("ALTER TABLE events ADD PRIMARY KEY (id)")
        conn.execute("ANALYZE events")
    yield pg_database


@pytest.fixture
def reader_url(events_db: str) -> Iterator[str]:
    """A role that can only SELECT ``events`` (what the snapshot connects as), dropped afterwards."""
    role = "reader_" + events_db.rsplit("/", 1)[1]
    with psycopg.connect(events_db, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT ON events TO "{role}"')
    try:
        yield events_db.replace("postgres@", f"{role}@", 1)
    finally:
        with psycopg.connect(events_db, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def failure_catalog(reader_url: str, write_catalog: Callable[..., Path]) -> Path:
    def entry(name: str, query: str) -> dict[str, Any]:
        return {"source": "pg", "query": query, "partitions": {"cadence": "daily", "start": "2024-01-01"},
                "key": ["payload"] if name == "events_sorted" else ["id"]}

    return write_catalog({
        "sources": {"pg": {"kind": "postgres", "url": reader_url, "max_attempts": 1}},
        "snapshots": {name: entry(name, q) for name, q in SNAPSHOTS.items()},
    })


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a snapshot of ``events`` cannot fit. Needs root (mount); CI must be able to."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        missing_peer(f"cannot mount a 2 MB tmpfs to fill a disk (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def cli_env(catalog: Path, storage: Path, env: PlatformEnv) -> dict[str, str]:
    return {**os.environ, "SNAPSHOT_PLATFORM_CATALOG": str(catalog), "SNAPSHOT_PLATFORM_STORAGE_URL": str(storage),
            "SNAPSHOT_PLATFORM_HOME": str(env.home), "PYTHONWARNINGS": "ignore"}


def assert_nothing_left(storage: Path, name: str) -> None:
    """No staging data, no published version, no manifest-less folder, no .tmp anywhere."""
    staging = storage / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    partition = storage / "snapshots" / name / PARTITION
    assert not partition.exists() or not any(partition.iterdir()), list(partition.iterdir())
    assert not list(storage.rglob("*.tmp"))


def assert_no_crash(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str], stderr: str) -> None:
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}:\n{stderr}"
    for sign in ("Segmentation fault", "Fatal Python error", "Traceback", "core dumped", "Aborted!"):
        assert sign not in stderr, stderr


# ---------------------------------------------------------------- disk full


def test_disk_full_cli_fails_in_one_line_and_leaves_nothing(
    failure_catalog: Path, small_disk: Path, platform_env: PlatformEnv
) -> None:
    env = cli_env(failure_catalog, small_disk, platform_env)
    for _ in range(3):  # the crash this guards against was intermittent
        proc = subprocess.run([*CLI, "snapshot", "events", PARTITION], env=env, capture_output=True,
                              text=True, timeout=180)
        assert_no_crash(proc, proc.stderr)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "No space left on device (ENOSPC)" in lines[0], lines[0]
        assert f"writing {small_disk.resolve().as_uri()}/.staging/" in lines[0], lines[0]
        assert_nothing_left(small_disk, "events")


@pytest.mark.slow
def test_disk_full_in_dagster_reaches_the_event_log(
    failure_catalog: Path, small_disk: Path, platform_env: PlatformEnv
) -> None:
    env = PlatformEnv(platform_env.home, small_disk, platform_env.dagster_home)
    proc = dagster_materialize(failure_catalog, env, ["events"], PARTITION)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Segmentation fault" not in proc.stderr and "signal 11" not in proc.stderr, proc.stderr
    failures = step_failures(platform_env.dagster_home)
    assert "snapshots__events" in failures, failures
    cause = failures["snapshots__events"]
    assert "No space left on device (ENOSPC) writing" in cause, cause
    assert small_disk.resolve().as_uri() in cause, cause
    assert_nothing_left(small_disk, "events")


# ---------------------------------------------------------------- interrupts


def held_backend(db_url: str) -> bool:
    """Our snapshot query is waiting on the test's advisory lock."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'snapshot_platform'"
            " AND datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()
    return bool(row and row[0])


def no_backend(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'snapshot_platform'"
            " AND datname = current_database()").fetchone()
    return row is not None and row[0] == 0


def staged_parts(storage: Path) -> list[Path]:
    return [p for p in (storage / ".staging").glob("*/part-*.parquet") if p.stat().st_size > 0] \
        if (storage / ".staging").exists() else []


# publish paused just before the version folder is placed (staging complete, no manifest yet)
_PAUSE_IN_PUBLISH = """
import sys, threading, pathlib
from snapshot_platform.store.store import SnapshotStore
marker = pathlib.Path(sys.argv.pop(1))
original = SnapshotStore._place_local
def paused(self, *args, **kwargs):
    marker.write_text("publishing")
    threading.Event().wait()
    return original(self, *args, **kwargs)
SnapshotStore._place_local = paused
from snapshot_platform.cli import main
main(prog_name="snapshot-platform")
"""

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["query", "mid-stream", "publish"])
def test_interrupt_exits_cleanly(
    point: str, sig: signal.Signals, failure_catalog: Path, events_db: str, platform_env: PlatformEnv, tmp_path: Path
) -> None:
    """Ctrl-C exits 130, SIGTERM 143: one line, no crash, no staging, nothing published, query gone."""
    storage = platform_env.storage
    env = cli_env(failure_catalog, storage, platform_env)
    marker = tmp_path / "publishing"
    name = {"query": "events_sorted", "mid-stream": "events_held", "publish": "events"}[point]
    command = [*CLI, "snapshot", name, PARTITION]
    if point == "publish":
        command = [sys.executable, "-c", _PAUSE_IN_PUBLISH, str(marker), "snapshot", name, PARTITION]
    holder = psycopg.connect(events_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if point == "query":  # the server sorts: the main thread waits in the driver's execute
            wait_until("the query waiting on the lock", lambda: held_backend(events_db))
            proc.send_signal(sig)
            # the signal is taken when the server answers: let it (the interrupt is already pending)
            holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        elif point == "mid-stream":  # rows written to staging, the reader thread waits in the driver
            wait_until("staged rows", lambda: staged_parts(storage))
            wait_until("the stream waiting on the lock", lambda: held_backend(events_db))
            proc.send_signal(sig)  # the lock stays held: only a server-side cancel ends the fetch
        else:
            wait_until("publish to start", marker.exists)
            assert staged_parts(storage)
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        holder.close()
    assert_no_crash(proc, stderr)
    assert proc.returncode == EXIT[sig], stderr
    what = "interrupted (Ctrl-C)" if sig == signal.SIGINT else "terminated (SIGTERM)"
    assert stderr.strip().splitlines() == [f"snapshot-platform: {name}/{PARTITION} {what}; nothing published"]
    assert_nothing_left(storage, name)
    wait_until("the snapshot's session to end", lambda: no_backend(events_db), timeout=30)


def test_a_snapshot_after_an_interrupt_publishes(
    failure_catalog: Path, events_db: str, platform_env: PlatformEnv
) -> None:
    """The store is usable after the interrupts above: the same snapshot then publishes all rows."""
    env = cli_env(failure_catalog, platform_env.storage, platform_env)
    proc = subprocess.run([*CLI, "snapshot", "events_held", PARTITION, "--json"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["row_count"] == ROWS


# ---------------------------------------------------------------- §7: runs whose process died

def deploy_config(which: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / f"dagster.{which}.yaml").read_text())


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_deploy_configs_turn_on_run_monitoring(which: str) -> None:
    monitoring = deploy_config(which).get("run_monitoring") or {}
    assert monitoring.get("enabled") is True, monitoring
    # the default run launcher cannot check a run worker's health: only the maximum runtime ends
    # a run whose process died, so it must be set
    assert int(monitoring.get("max_runtime_seconds", 0)) > 0, monitoring
    assert int(monitoring.get("poll_interval_seconds", 0)) > 0, monitoring


def run_statuses(dagster_home: Path) -> dict[str, str]:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return {r.run_id: r.status.value for r in instance.get_runs()}


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """End a process started with start_new_session=True and everything it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_run_whose_process_was_killed_ends_failed(
    failure_catalog: Path, events_db: str, platform_env: PlatformEnv
) -> None:
    """kill -9 of ``dagster asset materialize`` mid-snapshot; the daemon, run with the shipped
    deploy/dagster.sqlite.yaml (its maximum runtime shortened for the test), marks the run FAILED."""
    config = deploy_config("sqlite")
    config["run_monitoring"] = {**config.get("run_monitoring", {}), "max_runtime_seconds": 5,
                                "poll_interval_seconds": 1}
    home = platform_env.dagster_home
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "SNAPSHOT_PLATFORM_CATALOG": str(failure_catalog),
           "SNAPSHOT_PLATFORM_STORAGE_URL": str(platform_env.storage),
           "SNAPSHOT_PLATFORM_HOME": str(platform_env.home), "DAGSTER_HOME": str(home)}
    holder = psycopg.connect(events_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    run = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
         "--select", "snapshots/events_held", "--partition", PARTITION],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    daemon = None
    try:
        wait_until("the run's query waiting on the lock", lambda: held_backend(events_db), timeout=180)
        os.killpg(run.pid, signal.SIGKILL)  # the run's process and its step process die at once
        run.wait()
        (run_id, status), = run_statuses(home).items()
        assert status == "STARTED"  # what happens without monitoring: it stays so forever
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "snapshot_platform.definitions"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        wait_until("the daemon to fail the dead run",
                   lambda: run_statuses(home)[run_id] == "FAILURE", timeout=180)
    finally:
        stop_group(run)
        if daemon is not None:
            stop_group(daemon)
        holder.close()
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
        messages = [e.dagster_event.message or "" for e in instance.all_logs(run_id) if e.dagster_event]
    assert any("exceeding maximum runtime of 5 seconds" in m for m in messages), messages


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_dagster_mid_stream_cleans_up_and_logs_why(
    sig: signal.Signals, failure_catalog: Path, events_db: str, platform_env: PlatformEnv
) -> None:
    """Dagster turns the signal into an interrupt of the step: our clean-up runs in the step process
    (query cancelled on the server, staging removed, nothing published), the run ends failed or
    canceled, and the step's failure in the event log says it was interrupted; nothing crashes."""
    env = {**os.environ, "SNAPSHOT_PLATFORM_CATALOG": str(failure_catalog),
           "SNAPSHOT_PLATFORM_STORAGE_URL": str(platform_env.storage),
           "SNAPSHOT_PLATFORM_HOME": str(platform_env.home), "DAGSTER_HOME": str(platform_env.dagster_home)}
    holder = psycopg.connect(events_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    run = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
         "--select", "snapshots/events_held", "--partition", PARTITION],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until("staged rows", lambda: staged_parts(platform_env.storage), timeout=180)
        wait_until("the stream waiting on the lock", lambda: held_backend(events_db))
        run.send_signal(sig)  # the lock stays held: only the server-side cancel ends the fetch
        output, _ = run.communicate(timeout=120)
    finally:
        stop_group(run)
        holder.close()
    assert run.returncode != 0, output
    for sign in ("Segmentation fault", "signal 11", "Fatal Python error", "core dumped"):
        assert sign not in output, output
    (status,) = run_statuses(platform_env.dagster_home).values()
    assert status in ("FAILURE", "CANCELED"), status
    failures = step_failures(platform_env.dagster_home)
    assert "interrupt" in failures.get("snapshots__events_held", "").lower(), failures
    assert_nothing_left(platform_env.storage, "events_held")
    wait_until("the snapshot's session to end", lambda: no_backend(events_db), timeout=30)


def test_interrupt_mid_stream_on_mysql_kills_the_query(
    mysql_database: str, mysql_server: dict[str, Any], write_catalog: Callable[..., Path],
    platform_env: PlatformEnv
) -> None:
    """PyMySQL's reader thread waits in a socket read the Ctrl-C cannot reach: the store's cancel
    (KILL QUERY from a second session) ends it, and the command exits 130 without waiting for the row."""
    import pymysql

    db = mysql_database.rsplit("/", 1)[1]
    with pymysql.connect(**mysql_server, database=db) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE events (id INT PRIMARY KEY, ts DATETIME NOT NULL, payload CHAR(64) NOT NULL)")
        cur.execute(f"INSERT INTO events SELECT seq, '2024-01-01 00:00:00' + INTERVAL (seq % 80000) SECOND,"
                    f" CONCAT(MD5(seq), MD5(seq * 7)) FROM seq_1_to_{ROWS}")
    catalog = write_catalog({
        "sources": {"shop": {"kind": "mysql", "url": mysql_database, "max_attempts": 1,
                             "allow_privileged_role": True}},  # the test server's only user is root
        "snapshots": {"events_held": {
            "source": "shop", "key": ["id"], "partitions": {"cadence": "daily", "start": "2024-01-01"},
            "query": "SELECT id, ts, payload FROM events WHERE :partition_start < :partition_end"
                     f" AND (id <> {HELD_ID} OR GET_LOCK('sp_failures', 600) >= 0)"}},
    })

    def waiting_on_lock() -> bool:
        with pymysql.connect(**mysql_server) as c, c.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND STATE = 'User lock'", (db,))
            return cur.fetchone()[0] > 0

    holder = pymysql.connect(**mysql_server)
    holder.cursor().execute("SELECT GET_LOCK('sp_failures', 10)")
    proc = subprocess.Popen([*CLI, "snapshot", "events_held", PARTITION], env=cli_env(catalog, platform_env.storage, platform_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until("staged rows", lambda: staged_parts(platform_env.storage))
        wait_until("the stream waiting on the lock", waiting_on_lock)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        holder.close()
    assert_no_crash(proc, stderr)
    assert proc.returncode == 130, stderr
    assert [line for line in stderr.strip().splitlines() if "privileged role" not in line] == [
        f"snapshot-platform: events_held/{PARTITION} interrupted (Ctrl-C); nothing published"]
    assert_nothing_left(platform_env.storage, "events_held")
