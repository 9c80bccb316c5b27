"""Deduplicated storage: what the next day's as-of snapshot of a table adds to the storage root.

Creates a database (``snapshot_dedupe_bench``, ``--db`` to change) on a PostgreSQL server with a
``customers`` table of ``--rows`` rows (1,000,000 by default, generated server-side and
deterministically, so every run stores the same bytes), and a catalog with one ``mode: as_of``
snapshot of it (key ``customer_id``). Then, through the real command (``snapshot-platform snapshot
NAME P --accept-late``: both partitions closed long ago, so both reads are late and accepted):

1. snapshot partition A (2024-01-01): the table's state;
2. insert 1% new rows at the end of the key range (signed up on 2024-01-02) and update 0.1% of the
   rows in one key range (one contiguous block of ids in the middle);
3. snapshot partition B (2024-01-02).

It prints the bytes of the storage root (every file under it) after A and after B, the ratio of
what B added to what A took, and PASS/FAIL against the target: B adds at most 10% of A's bytes.
For comparison it prints B's full size (what B would have added when every version was a full copy,
the layout before shared parts). ``--check`` exits 1 on a miss; otherwise the exit status is 0.
The database is dropped at the end unless ``--keep``.

    .venv/bin/python benchmarks/dedupe.py                 # 1M rows, about a minute
    .venv/bin/python benchmarks/dedupe.py --rows 200000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from snapshot_throughput import db_url, drop_database  # benchmarks/ is on sys.path when run

SERVER_ENV = "SNAPSHOT_BENCH_SERVER"
FALLBACK_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_DB = "snapshot_dedupe_bench"
SNAPSHOT = "customers_state"
PARTITION_A, PARTITION_B = "2024-01-01", "2024-01-02"
TARGET_RATIO = 0.10

DDL = """
CREATE TABLE customers (
    customer_id     bigint PRIMARY KEY,
    signup_date     date NOT NULL,
    country         text NOT NULL,
    plan            text NOT NULL,
    total_purchases numeric(12, 2) NOT NULL,
    avg_order_value double precision NOT NULL,
    churn_label     boolean NOT NULL,
    notes           text
)
"""

# deterministic values from the id (no random()): every run stores the same bytes
ROWS = """
INSERT INTO customers
SELECT i,
       %(signup)s::date + CASE WHEN %(spread)s THEN (i %% 1461)::int - 1461 ELSE 0 END,
       (ARRAY['DE', 'FR', 'US', 'GB', 'JP', 'BR'])[1 + i %% 6],
       (ARRAY['free', 'basic', 'pro'])[1 + (i * 7) %% 3],
       ((i * 2654435761) %% 500000) / 100.0,
       ((i * 40503) %% 20000) / 100.0,
       (i * 2246822519) %% 5 = 0,
       CASE WHEN i %% 4 = 0 THEN NULL ELSE 'note ' || md5(i::text) END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""

QUERY = ("SELECT customer_id, signup_date, country, plan, total_purchases, avg_order_value, churn_label, notes\n"
         "FROM customers WHERE signup_date < :partition_end")


def _log(msg: str) -> None:
    print(f"[dedupe {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def create_database(server: str, db: str, rows: int) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(db_url(server, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    with psycopg.connect(db_url(server, db), autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(ROWS, {"signup": "2024-01-01", "spread": True, "first": 1, "last": rows})
        conn.execute("VACUUM ANALYZE customers")


def change_rows(server: str, db: str, rows: int) -> tuple[int, int]:
    """1% new rows at the end of the key range, 0.1% updated in one key range: (inserted, updated)."""
    import psycopg

    inserted, updated = rows // 100, rows // 1000
    first = rows // 2
    with psycopg.connect(db_url(server, db), autocommit=True) as conn:
        conn.execute(ROWS, {"signup": "2024-01-02", "spread": False, "first": rows + 1, "last": rows + inserted})
        done = conn.execute(
            "UPDATE customers SET total_purchases = total_purchases + 1, churn_label = NOT churn_label "
            "WHERE customer_id BETWEEN %s AND %s", (first, first + updated - 1)).rowcount
    return inserted, done


def catalog_doc(url: str) -> dict[str, Any]:
    """One as-of snapshot of ``customers``; the source is the admin reading its own throwaway database."""
    snapshot = {"source": "bench", "mode": "as_of", "query": QUERY, "key": ["customer_id"],
                "partitions": {"cadence": "daily", "start": PARTITION_A}}
    return {"sources": {"bench": {"kind": "postgres", "url": url, "allow_privileged_role": True}},
            "snapshots": {SNAPSHOT: snapshot}}


def root_bytes(root: Path) -> tuple[int, int]:
    """(bytes, files) of every file under the storage root."""
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def snapshot(env: dict[str, str], partition: str) -> tuple[dict[str, Any], float]:
    cli = str(Path(sys.executable).with_name("snapshot-platform"))
    started = time.monotonic()
    done = subprocess.run([cli, "snapshot", SNAPSHOT, partition, "--accept-late", "--json"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"snapshot {partition} failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--server", default=os.environ.get(SERVER_ENV, FALLBACK_SERVER),
                   help=f"PostgreSQL server URL without a database (default ${SERVER_ENV} or {FALLBACK_SERVER})")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--keep", action="store_true", help="keep the database and the storage root")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = p.parse_args(argv)

    from snapshot_platform.store import SnapshotStore

    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    work = Path(tempfile.mkdtemp(prefix="dedupe-bench-"))
    storage = work / "storage"
    url = db_url(args.server, args.db)
    (work / "catalog.json").write_text(json.dumps(catalog_doc(url)))  # JSON is YAML
    env = {**os.environ, "SNAPSHOT_PLATFORM_HOME": str(work / "home"), "SNAPSHOT_PLATFORM_STORAGE_URL": str(storage),
           "SNAPSHOT_PLATFORM_CATALOG": str(work / "catalog.json"), "SNAPSHOT_PLATFORM_PROGRESS_SECONDS": "3600"}
    try:
        _log(f"creating {args.db} with {args.rows:,} rows")
        create_database(args.server, args.db, args.rows)
        _log(f"snapshot {SNAPSHOT} {PARTITION_A} --accept-late")
        out_a, secs_a = snapshot(env, PARTITION_A)
        bytes_a, files_a = root_bytes(storage)
        inserted, updated = change_rows(args.server, args.db, args.rows)
        _log(f"inserted {inserted:,} rows at the end of the key range, updated {updated:,} in one key range; "
             f"snapshot {SNAPSHOT} {PARTITION_B} --accept-late")
        out_b, secs_b = snapshot(env, PARTITION_B)
        bytes_ab, files_ab = root_bytes(storage)
        store = SnapshotStore(storage)
        a = store.read_manifest(SNAPSHOT, PARTITION_A, out_a["manifest"]["version"])
        b = store.read_manifest(SNAPSHOT, PARTITION_B, out_b["manifest"]["version"])
        old = {f.sha256 for f in a.files}
        new_parts = [f for f in b.files if f.sha256 not in old]
        problems = store.verify_version(a) + store.verify_version(b)
    finally:
        if not args.keep:
            drop_database(args.server, args.db)
            shutil.rmtree(work, ignore_errors=True)
    added = bytes_ab - bytes_a
    ratio = added / bytes_a
    full_b = sum(f.bytes for f in b.files)
    result = {
        "rows_a": a.row_count, "rows_b": b.row_count, "inserted": inserted, "updated": updated,
        "bytes_a": bytes_a, "files_a": files_a, "bytes_after_b": bytes_ab, "files_after_b": files_ab,
        "added_by_b": added, "ratio": round(ratio, 4), "target": TARGET_RATIO,
        "parts_a": len(a.files), "parts_b": len(b.files), "new_parts_b": len(new_parts),
        "full_copy_b": full_b, "full_copy_ratio": round(full_b / bytes_a, 4),
        "late": [a.late, b.late], "verified": not problems, "seconds": [round(secs_a, 1), round(secs_b, 1)],
        "loadavg": load, "writer": dict(a.writer or {}),
    }
    ok = ratio <= TARGET_RATIO and not problems
    if args.json:
        print(json.dumps({**result, "pass": ok}, indent=2))
    else:
        print(f"partition A {PARTITION_A}: {a.row_count:,} rows in {len(a.files)} parts; storage root "
              f"{bytes_a:,} bytes ({files_a} files) [{secs_a:.1f} s]")
        print(f"partition B {PARTITION_B}: {b.row_count:,} rows (+{inserted:,} inserted, {updated:,} updated) in "
              f"{len(b.files)} parts, {len(new_parts)} of them new; storage root {bytes_ab:,} bytes "
              f"({files_ab} files) [{secs_b:.1f} s]")
        print(f"B added {added:,} bytes = {ratio:.1%} of A's {bytes_a:,} "
              f"(as a full copy B would add {full_b:,} bytes = {full_b / bytes_a:.1%}); load average {' '.join(load)}")
        for problem in problems:
            print(f"verify: {problem}")
        print(f"{'PASS' if ok else 'FAIL'}: B adds {ratio:.1%} of A's bytes (target at most {TARGET_RATIO:.0%})"
              + ("" if not problems else "; a version did not verify"))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
