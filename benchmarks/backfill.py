"""Backfill through the Dagster daemon: many partitions per run (the backfill policy) vs one run each.

Creates its own database on a PostgreSQL server (``snapshot_backfill_bench``, dropped at the end
unless ``--keep``) with ``--rows`` rows in each of ``--partitions`` daily partitions, writes a
one-snapshot catalog, and backfills every partition twice, each time in a fresh ``DAGSTER_HOME``
(``deploy/dagster.sqlite.yaml``: queued runs, at most 8 at once, the source's pool of 2 slots) and a
fresh storage folder, through a real ``dagster-daemon``:

* **policy**: the snapshot asset's backfill policy as shipped (``multi_run``, up to
  ``SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN`` partitions a run, default 30; ``--per-run``);
* **per_partition**: the same with ``SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN=1``, one run
  (one run worker, one step process) per partition: what a backfill cost before.

The backfill is submitted the way the UI's "Materialize partitions" does (an asset backfill in the
instance: ``PartitionBackfill.from_asset_partitions`` + ``instance.add_backfill``) once the daemon
is up; the time runs from the submission until the backfill is complete. Each mode is then checked:
one published version (manifest) and one materialization per partition. Prints both wall times, the
ratio and the load average; ``--check`` exits 1 when the ratio is below 5.

    .venv/bin/python benchmarks/backfill.py                        # 100 partitions x 10,000 rows
    .venv/bin/python benchmarks/backfill.py --partitions 20 --rows 1000 --json

The server is ``--server`` (default ``$SNAPSHOT_BENCH_SERVER``, else
``postgresql://postgres@127.0.0.1:5432``), without a database name or password.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVER_ENV = "SNAPSHOT_BENCH_SERVER"
FALLBACK_SERVER = "postgresql://postgres@127.0.0.1:5432"
DB = "snapshot_backfill_bench"
NAME = "events"
START = dt.date(2024, 1, 1)
TARGET_RATIO = 5.0
PER_RUN_ENV = "SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare_database(server: str, partitions: int, rows: int) -> str:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    url = f"{server}/{DB}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, day date NOT NULL, amount numeric(12, 2), "
                     "status text NOT NULL)")
        conn.execute(
            "INSERT INTO events SELECT g, %s::date + ((g - 1) / %s)::int, (g %% 1000) * 1.25, "
            "(ARRAY['open', 'paid', 'shipped'])[1 + g %% 3] FROM generate_series(1, %s) g",
            (START, rows, rows * partitions),
        )
        conn.execute("CREATE INDEX ON events (day)")
        conn.execute("ANALYZE events")
    return url


def drop_database(server: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


def write_catalog(path: Path, url: str) -> None:
    path.write_text(yaml.safe_dump({
        "sources": {"bench": {"kind": "postgres", "url": url, "max_concurrent_queries": 2,
                              # the benchmark reads as the server's admin user, on its own database
                              "allow_privileged_role": True}},
        "snapshots": {NAME: {
            "source": "bench",
            "query": "SELECT id, day, amount, status FROM events "
                     "WHERE day >= :partition_start AND day < :partition_end",
            "partitions": {"cadence": "daily", "start": START.isoformat()},
            "key": ["id"],
            "not_null": ["id", "day"],
        }},
    }, sort_keys=False))


def backfill(mode: str, work: Path, catalog: Path, keys: list[str], per_run: int | None,
             timeout: float) -> dict[str, Any]:
    """Run one backfill of every key through a fresh daemon; its wall time and what it left."""
    home, storage = work / mode / "dagster_home", work / mode / "storage"
    home.mkdir(parents=True)
    storage.mkdir()
    config = yaml.safe_load((REPO / "deploy" / "dagster.sqlite.yaml").read_text())
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "SNAPSHOT_PLATFORM_CATALOG": str(catalog),
           "SNAPSHOT_PLATFORM_STORAGE_URL": str(storage), "SNAPSHOT_PLATFORM_HOME": str(work / mode / "home")}
    if per_run is not None:
        env[PER_RUN_ENV] = str(per_run)
    else:
        os.environ.pop(PER_RUN_ENV, None)
    os.environ.update(env)  # this process builds the backfill from the same definitions

    from dagster import AssetKey, DagsterInstance, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from snapshot_platform.orchestration.definitions import build_definitions

    defs = build_definitions()
    key = AssetKey(["snapshots", NAME])
    policy = defs.resolve_assets_def(key).backfill_policy
    with DagsterInstance.from_config(str(home)) as instance:
        # submitted before the daemon starts: its first backfill iteration, at start-up, picks it up
        # (the loop then runs every 30 s), so both modes start the same way
        backfill_id = make_new_backfill_id()
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id, asset_graph=defs.resolve_asset_graph(), partition_names=keys,
            asset_selection=[key], backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance,
            all_partitions=False, title=f"benchmark {mode}", description=None, run_config=None))
        load = os.getloadavg()[0]
        started = time.monotonic()
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "snapshot_platform.definitions"],
                                  env={**os.environ, **env}, cwd=work, stdout=subprocess.DEVNULL,
                                  stderr=open(work / mode / "daemon.log", "w"), start_new_session=True)
        try:
            while (status := instance.get_backfill(backfill_id).status) == BulkActionStatus.REQUESTED:
                if time.monotonic() - started > timeout:
                    raise SystemExit(f"the {mode} backfill did not finish in {timeout:g}s "
                                     f"(the daemon's log: {work / mode / 'daemon.log'}; --keep keeps it)")
                time.sleep(0.5)
            seconds = time.monotonic() - started
        finally:  # the daemon and the processes it started
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        runs = instance.get_run_records(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
        records = instance.fetch_materializations(key, limit=len(keys) * 2).records
    # the work itself: from the first run's creation to the last run's end (the daemon's loop, every
    # 30 s, adds up to that much before it sees the backfill complete)
    first = min((r.create_timestamp.timestamp() for r in runs), default=0.0)
    work_seconds = max((r.end_time or 0.0 for r in runs), default=0.0) - first
    manifests = sorted(storage.glob(f"snapshots/{NAME}/*/*/manifest.json"))
    return {
        "mode": mode, "seconds": round(seconds, 2), "work_seconds": round(work_seconds, 2),
        "status": status.value, "runs": len(runs),
        "max_partitions_per_run": policy.max_partitions_per_run if policy else 1,
        "manifests": len(manifests), "materializations": len(records),
        "partitions_materialized": len({r.partition_key for r in records} & set(keys)),
        "load_average_at_start": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--partitions", type=int, default=100)
    p.add_argument("--rows", type=int, default=10_000, help="rows per partition")
    p.add_argument("--per-run", type=int, default=None,
                   help="partitions per run in the policy mode (default: the platform's default)")
    p.add_argument("--server", default=os.environ.get(SERVER_ENV, FALLBACK_SERVER))
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one backfill")
    p.add_argument("--keep", action="store_true",
                   help="keep the database and the work folder (DAGSTER_HOMEs, storage, daemon logs)")
    p.add_argument("--only", choices=("policy", "per_partition"), help="run one mode only (no ratio)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when the speed-up is below {TARGET_RATIO:g}x or a partition is missing")
    args = p.parse_args(argv)

    keys = [(START + dt.timedelta(days=i)).isoformat() for i in range(args.partitions)]
    load_before = os.getloadavg()
    log(f"filling {args.partitions} x {args.rows:,} rows into {DB} ...")
    url = prepare_database(args.server, args.partitions, args.rows)
    try:
        work = Path(tempfile.mkdtemp(prefix="backfill_bench_"))
        try:
            catalog = work / "snapshots.yaml"
            write_catalog(catalog, url)
            results = []
            for mode, per_run in (("policy", args.per_run), ("per_partition", 1)):
                if args.only not in (None, mode):
                    continue
                log(f"{mode}: backfilling {len(keys)} partitions through dagster-daemon ...")
                results.append(backfill(mode, work, catalog, keys, per_run, args.timeout))
                log(f"  {results[-1]}")
        finally:
            if args.keep:
                log(f"work folder kept: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            drop_database(args.server)
    complete = all(r["manifests"] == r["materializations"] == r["partitions_materialized"] == len(keys)
                   and r["status"] == "COMPLETED_SUCCESS" for r in results)
    by_mode = {r["mode"]: r for r in results}
    ratio = work_ratio = None
    if len(by_mode) == 2:
        policy, single = by_mode["policy"], by_mode["per_partition"]
        ratio = round(single["seconds"] / policy["seconds"], 2)
        if policy["work_seconds"] > 0:
            work_ratio = round(single["work_seconds"] / policy["work_seconds"], 2)
    report = {"partitions": args.partitions, "rows_per_partition": args.rows, "results": results,
              "ratio": ratio, "work_ratio": work_ratio, "target_ratio": TARGET_RATIO, "complete": complete,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"backfill of {args.partitions} daily partitions x {args.rows:,} rows through dagster-daemon "
              f"(load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f})")
        for r in results:
            print(f"  {r['mode']:<14} {r['seconds']:7.1f} s to complete "
                  f"({r['work_seconds']:6.1f} s of runs)  "
                  f"{r['runs']:3d} runs of up to {r['max_partitions_per_run']} partitions  "
                  f"{r['manifests']} manifests, {r['materializations']} materializations, {r['status']}")
        if ratio is not None:
            print(f"  speed-up: {ratio:.1f}x to complete, {work_ratio}x of runs (target {TARGET_RATIO:g}x): "
                  f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
        if not complete:
            print("  INCOMPLETE: a backfill failed, or a partition lacks its manifest or materialization")
    return 1 if args.check and (ratio is None or ratio < TARGET_RATIO or not complete) else 0


if __name__ == "__main__":
    sys.exit(main())
