"""Snapshot throughput: our streaming writer against the usual ``pandas.read_sql`` + ``to_parquet``.

The benchmark creates its own database on a PostgreSQL server, fills a TPC-H-shaped ``lineitem``
table with ``generate_series`` (server side, fast; reused when it already holds the asked-for rows),
then snapshots the whole table twice, each pipeline in a fresh Python process so that its peak RSS
is its own:

* **ours**: ``snapshot_platform.capture.take_snapshot`` with an in-memory catalog, a window
  covering every row, and a ``SnapshotStore`` in a temporary folder (ADBC binary COPY → Arrow
  batches → zstd Parquet parts, hashed and published with a manifest);
* **pandas**: ``pandas.read_sql`` of the same ordered query through SQLAlchemy 2 + psycopg 3, then
  ``DataFrame.to_parquet`` (pyarrow, its default snappy compression).

Both run the same ordered SQL: ``SELECT * FROM (<query>) AS snapshot_query ORDER BY l_orderkey, l_linenumber``.
Reported per pipeline: wall time of the pipeline (imports and interpreter start excluded), rows/s,
peak RSS of the child process (``os.wait4``'s rusage of that very child), RSS right after its
imports, the bytes written, the child's CPU seconds (user + system, imports included) and the
1-minute load average before it started: wall times on a shared machine are only as good as that. Targets (PASS/FAIL lines): ours is at least 5x faster than pandas,
ours peaks below 500 MB, and ours' peak RSS stays flat (within 15%) when the row count doubles
(``--scaling``). The exit status is 0 whatever the results unless ``--check`` is given.

Usage (from the repository root)::

    .venv/bin/python benchmarks/snapshot_throughput.py --rows 200000          # quick
    .venv/bin/python benchmarks/snapshot_throughput.py                        # 6M rows, both
    .venv/bin/python benchmarks/snapshot_throughput.py --scaling --skip-pandas  # ours at 6M, 12M
    .venv/bin/python benchmarks/snapshot_throughput.py --repeat 3 --keep      # best of 3, keep the data

The server is ``--server`` (default ``$SNAPSHOT_BENCH_SERVER``, else
``postgresql://postgres@127.0.0.1:5432``), without a database name. A password, if the server
needs one, comes from libpq's own ``PGPASSWORD`` or ``~/.pgpass``; it is never put in a URL here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROWS = 6_000_000
DEFAULT_DB = "snapshot_bench"
SERVER_ENV = "SNAPSHOT_BENCH_SERVER"
FALLBACK_SERVER = "postgresql://postgres@127.0.0.1:5432"

SNAPSHOT = "lineitem"
PARTITION_KEY = "all"
KEY = ["l_orderkey", "l_linenumber"]  # TPC-H's primary key of lineitem: unique, so the order is total
QUERY = "SELECT * FROM lineitem WHERE l_shipdate >= :partition_start AND l_shipdate < :partition_end"
# The ordered query, as our PostgreSQL source wraps it (sources/base.py: ordered()), same parameters.
ORDERED_QUERY = (f'SELECT * FROM (\n{QUERY}\n) AS snapshot_query '
                 'ORDER BY snapshot_query."l_orderkey", snapshot_query."l_linenumber"')
WINDOW_START = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
WINDOW_END = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

TARGET_SPEEDUP = 5.0
TARGET_PEAK_RSS_BYTES = 500 * 10**6
TARGET_FLAT_TOLERANCE = 0.15

GENERATOR_TAG = "snapshot_throughput lineitem v1"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# ---------------------------------------------------------------- data set

LINEITEM_DDL = """
CREATE UNLOGGED TABLE lineitem (
    l_orderkey      bigint         NOT NULL,
    l_partkey       int            NOT NULL,
    l_suppkey       int            NOT NULL,
    l_linenumber    int            NOT NULL,
    l_quantity      numeric(15, 2) NOT NULL,
    l_extendedprice numeric(15, 2) NOT NULL,
    l_discount      numeric(15, 2) NOT NULL,
    l_tax           numeric(15, 2) NOT NULL,
    l_returnflag    text           NOT NULL,
    l_linestatus    text           NOT NULL,
    l_shipdate      date           NOT NULL,
    l_commitdate    date           NOT NULL,
    l_receiptdate   date           NOT NULL,
    l_shipinstruct  text           NOT NULL,
    l_shipmode      text           NOT NULL,
    l_comment       text           NOT NULL
)
"""

# Row i (1-based) of the data set. Four lines per order; the value distributions follow TPC-H's
# dbgen (dates 1992-1998, prices from the part key, flags from the dates); comments are word-like
# slices of a fixed text so that they compress like real prose rather than like random hex.
# The nested selects keep each volatile random() evaluated once per row.
LINEITEM_ROWS = """
INSERT INTO lineitem
SELECT orderkey, partkey, suppkey, linenumber,
       quantity,
       round(quantity * (90000 + (partkey / 10) %% 20001 + 100 * (partkey %% 1000)) / 100.0, 2),
       discount, tax,
       CASE WHEN receiptdate <= DATE '1995-06-17'
            THEN CASE WHEN random() < 0.5 THEN 'R' ELSE 'A' END ELSE 'N' END,
       CASE WHEN shipdate > DATE '1995-06-17' THEN 'O' ELSE 'F' END,
       shipdate, commitdate, receiptdate,
       (ARRAY['DELIVER IN PERSON', 'COLLECT COD', 'NONE', 'TAKE BACK RETURN'])[1 + floor(random() * 4)::int],
       (ARRAY['REG AIR', 'AIR', 'RAIL', 'SHIP', 'TRUCK', 'MAIL', 'FOB'])[1 + floor(random() * 7)::int],
       substr(%(words)s, 1 + floor(random() * (length(%(words)s) - 44))::int, 10 + floor(random() * 34)::int)
FROM (
    SELECT *,
           orderdate + 30 + floor(random() * 61)::int AS commitdate,
           shipdate + 1 + floor(random() * 30)::int AS receiptdate
    FROM (
        SELECT orderkey, linenumber, orderdate,
               1 + floor(random() * 200000)::int AS partkey,
               1 + floor(random() * 10000)::int AS suppkey,
               (1 + floor(random() * 50))::numeric(15, 2) AS quantity,
               (floor(random() * 11) / 100)::numeric(15, 2) AS discount,
               (floor(random() * 9) / 100)::numeric(15, 2) AS tax,
               orderdate + 1 + floor(random() * 121)::int AS shipdate
        FROM (
            SELECT (i - 1) / 4 + 1 AS orderkey,
                   ((i - 1) %% 4 + 1)::int AS linenumber,
                   DATE '1992-01-01' + ((hashint8((i - 1) / 4 + 1) & 2147483647) %% 2406) AS orderdate
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
        ) AS ids
    ) AS lines
) AS dated
"""

WORDS = (
    "furiously regular deposits sleep carefully among the slyly final requests quickly ironic "
    "packages haggle blithely express accounts nag fluffily pending theodolites wake along the "
    "bold instructions boost daringly unusual foxes cajole quietly special pinto beans integrate "
    "evenly silent dependencies detect closely even ideas according to the busy platelets use "
    "permanently thin asymptotes above the stealthy dolphins are across the careful courts "
)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def db_url(server: str, db: str) -> str:
    return f"{server.rstrip('/')}/{db}"


def _table_rows(conn: Any) -> int | None:
    """Rows of a complete ``lineitem`` made by this generator, from its comment; None otherwise."""
    row = conn.execute(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
        " WHERE c.relname = 'lineitem' AND c.relnamespace = 'public'::regnamespace"
    ).fetchone()
    if row is None:
        return None
    m = re.fullmatch(re.escape(GENERATOR_TAG) + r" rows=(\d+)", row[0] or "")
    return int(m.group(1)) if m else -1


def _insert_range(url: str, first: int, last: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(LINEITEM_ROWS, {"words": WORDS, "first": first, "last": last})


def prepare_database(server: str, db: str, rows: int, jobs: int) -> None:
    """Create ``db`` if needed and make ``lineitem`` hold exactly rows 1..``rows`` of the data set."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(db_url(server, "postgres"), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
            _log(f"creating database {db}")
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))

    url = db_url(server, db)
    with psycopg.connect(url, autocommit=True) as conn:
        have = _table_rows(conn)
        if have == rows:
            _log(f"reusing lineitem with {rows:,} rows")
            return
        if have is None or have < 0 or have > rows:
            _log("creating table lineitem")
            conn.execute("DROP TABLE IF EXISTS lineitem")
            conn.execute(LINEITEM_DDL)
            have = 0
        conn.execute("COMMENT ON TABLE lineitem IS NULL")  # incomplete until the comment is back

        started = time.monotonic()
        _log(f"generating rows {have + 1:,}..{rows:,} with {jobs} connection(s)")
        todo = rows - have
        bounds = [have + todo * j // jobs for j in range(jobs + 1)]
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futures = [
                pool.submit(_insert_range, url, lo + 1, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo
            ]
            for f in futures:
                f.result()
        _log(f"generated in {time.monotonic() - started:.1f}s; vacuum analyze")
        conn.execute("VACUUM (FREEZE, ANALYZE) lineitem")  # hint bits set now, not during a timed read
        count = conn.execute("SELECT count(*) FROM lineitem").fetchone()[0]
        if count != rows:
            raise RuntimeError(f"lineitem holds {count:,} rows, expected {rows:,}")
        conn.execute(
            sql.SQL("COMMENT ON TABLE lineitem IS {}").format(sql.Literal(f"{GENERATOR_TAG} rows={rows}"))
        )
        size = conn.execute("SELECT pg_total_relation_size('lineitem')").fetchone()[0]
        _log(f"lineitem ready: {rows:,} rows, {size / 1e6:,.0f} MB on the server")


def drop_database(server: str, db: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(db_url(server, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
    _log(f"dropped database {db}")


def server_floor_seconds(server: str, db: str) -> float:
    """Server-side time of the ordered query alone (scan, filter, sort; no rows sent): EXPLAIN ANALYZE."""
    import psycopg

    pg_sql = ORDERED_QUERY.replace(":partition_start", "%(partition_start)s").replace(
        ":partition_end", "%(partition_end)s"
    )
    with psycopg.connect(db_url(server, db), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + pg_sql,
            {"partition_start": WINDOW_START, "partition_end": WINDOW_END},
        ).fetchone()[0]
    return plan[0]["Execution Time"] / 1000.0


# ---------------------------------------------------------------- the two pipelines (child side)


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def child_ours(url: str, out: Path) -> dict[str, Any]:
    from snapshot_platform.catalog import parse_catalog
    from snapshot_platform.capture import take_snapshot
    from snapshot_platform.sources import Window, make_source
    from snapshot_platform.store import SnapshotStore

    catalog = parse_catalog(
        {
            # the benchmark reads its own throwaway database as the admin that created it
            "sources": {"bench": {"kind": "postgres", "url": url, "allow_privileged_role": True}},
            "snapshots": {
                SNAPSHOT: {
                    "source": "bench",
                    "query": QUERY,
                    "partitions": {"cadence": "monthly", "start": "1990-01-01"},
                    "key": KEY,
                }
            },
        },
        path="<benchmark>",
    )
    store = SnapshotStore(str(out))
    import_rss = _maxrss_bytes()
    started = time.perf_counter()
    spec = catalog.snapshots[SNAPSHOT]
    source = make_source(spec.source, catalog.sources[spec.source])
    outcome = take_snapshot(spec, source, Window(WINDOW_START, WINDOW_END), store,
                            name=SNAPSHOT, partition_key=PARTITION_KEY)
    seconds = time.perf_counter() - started
    manifest = outcome.result.manifest
    return {
        "seconds": seconds,
        "rows": manifest.row_count,
        "output_bytes": sum(f.bytes for f in manifest.files),
        "files": len(manifest.files),
        "import_rss_bytes": import_rss,
        "detail": f"zstd level {manifest.writer['compression_level']}, {outcome.attempts} attempt(s)",
    }


def child_pandas(url: str, out: Path) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    path = out / "lineitem.parquet"
    import_rss = _maxrss_bytes()
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.exec_driver_sql("SET TimeZone = 'UTC'")
        df = pd.read_sql(
            sa.text(ORDERED_QUERY), conn,
            params={"partition_start": WINDOW_START, "partition_end": WINDOW_END},
        )
    df.to_parquet(path)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": seconds,
        "rows": len(df),
        "output_bytes": path.stat().st_size,
        "files": 1,
        "import_rss_bytes": import_rss,
        "detail": "pyarrow engine, default (snappy) compression",
    }


CHILDREN = {"ours": child_ours, "pandas": child_pandas}


def child_main(pipeline: str, url: str, out: Path, result_file: Path) -> None:
    result = CHILDREN[pipeline](url, out)
    result_file.write_text(json.dumps(result))


# ---------------------------------------------------------------- running and reporting (parent side)


@dataclass
class Run:
    pipeline: str
    rows_in_table: int
    rows: int
    seconds: float
    peak_rss_bytes: int
    import_rss_bytes: int
    output_bytes: int
    files: int
    process_seconds: float
    cpu_seconds: float
    load_before: float
    detail: str
    all_seconds: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": self.rows_per_second}


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


@dataclass
class Results:
    database: str
    server_floor_seconds: dict[int, float] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def find(self, pipeline: str, rows: int) -> Run | None:
        return next((r for r in self.runs if r.pipeline == pipeline and r.rows_in_table == rows), None)


def run_pipeline(pipeline: str, url: str, rows: int, workdir: Path) -> Run:
    """Run one pipeline in a fresh interpreter; its peak RSS comes from wait4() on that very child."""
    out = Path(tempfile.mkdtemp(prefix=f"{pipeline}-", dir=workdir))
    result_file = out.with_suffix(".json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", pipeline, "--child-url", url,
           "--child-out", str(out), "--child-result", str(result_file)]
    load_before = os.getloadavg()[0]
    _log(f"{pipeline}: snapshotting {rows:,} rows in a fresh process (load average {load_before:.2f})")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    process_seconds = time.perf_counter() - started
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"the {pipeline} pipeline failed (exit status {proc.returncode})")
        got = json.loads(result_file.read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
        result_file.unlink(missing_ok=True)
    run = Run(
        pipeline=pipeline,
        rows_in_table=rows,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        process_seconds=process_seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        load_before=load_before,
        **got,
    )
    _log(f"{pipeline}: {run.seconds:.1f}s, {run.rows_per_second:,.0f} rows/s, "
         f"peak RSS {run.peak_rss_bytes / 1e6:,.0f} MB, {run.output_bytes / 1e6:,.1f} MB written")
    return run


def run_repeated(pipeline: str, url: str, rows: int, workdir: Path, repeat: int) -> Run:
    """The fastest of ``repeat`` runs (other load only ever adds time), with the highest peak RSS."""
    runs = [run_pipeline(pipeline, url, rows, workdir) for _ in range(repeat)]
    best = min(runs, key=lambda r: r.seconds)
    best.peak_rss_bytes = max(r.peak_rss_bytes for r in runs)
    best.all_seconds = [r.seconds for r in runs]
    return best


def evaluate(results: Results, rows: int, scaling: bool) -> None:
    ours = results.find("ours", rows)
    pandas = results.find("pandas", rows)
    for run in results.runs:
        if run.rows != run.rows_in_table:
            results.targets.append(Target(
                f"{run.pipeline} at {run.rows_in_table:,} rows: row count", False,
                f"wrote {run.rows:,} rows, the table holds {run.rows_in_table:,}"))
    if ours and pandas:
        speedup = pandas.seconds / ours.seconds
        results.targets.append(Target(
            f"ours >= {TARGET_SPEEDUP:g}x faster than pandas at {rows:,} rows", speedup >= TARGET_SPEEDUP,
            f"{speedup:.2f}x ({pandas.seconds:.1f}s vs {ours.seconds:.1f}s)"))
    for run in results.runs:
        if run.pipeline == "ours":
            results.targets.append(Target(
                f"ours peak RSS < {TARGET_PEAK_RSS_BYTES / 1e6:,.0f} MB at {run.rows_in_table:,} rows",
                run.peak_rss_bytes < TARGET_PEAK_RSS_BYTES, f"{run.peak_rss_bytes / 1e6:,.0f} MB"))
    if scaling:
        big = results.find("ours", 2 * rows)
        if ours and big:
            growth = big.peak_rss_bytes / ours.peak_rss_bytes - 1
            results.targets.append(Target(
                f"ours peak RSS flat (within {TARGET_FLAT_TOLERANCE:.0%}) from {rows:,} to {2 * rows:,} rows",
                growth <= TARGET_FLAT_TOLERANCE,
                f"{ours.peak_rss_bytes / 1e6:,.0f} MB -> {big.peak_rss_bytes / 1e6:,.0f} MB ({growth:+.1%})"))


def print_report(results: Results, rows: int) -> None:
    header = (f"{'pipeline':<8} {'rows':>12} {'time s':>8} {'rows/s':>12} {'peak RSS MB':>12} "
              f"{'import RSS MB':>14} {'output MB':>10} {'files':>5} {'CPU s':>7}")
    print(header)
    print("-" * len(header))
    for r in results.runs:
        print(f"{r.pipeline:<8} {r.rows:>12,} {r.seconds:>8.1f} {r.rows_per_second:>12,.0f} "
              f"{r.peak_rss_bytes / 1e6:>12,.0f} {r.import_rss_bytes / 1e6:>14,.0f} "
              f"{r.output_bytes / 1e6:>10,.1f} {r.files:>5} {r.cpu_seconds:>7.1f}")
    for r in results.runs:
        print(f"  {r.pipeline} at {r.rows_in_table:,}: {r.detail}; whole process {r.process_seconds:.1f}s; "
              f"load average before {r.load_before:.2f}")
        if len(r.all_seconds) > 1:
            print(f"    all {len(r.all_seconds)} times: " + ", ".join(f"{t:.1f}s" for t in r.all_seconds))
    for n, s in results.server_floor_seconds.items():
        print(f"  server-side floor at {n:,} rows (EXPLAIN ANALYZE of the ordered query): {s:.1f}s")
    ours, pandas = results.find("ours", rows), results.find("pandas", rows)
    if ours and pandas:
        print(f"\nratio at {rows:,} rows: time pandas/ours = {pandas.seconds / ours.seconds:.2f}x, "
              f"peak RSS pandas/ours = {pandas.peak_rss_bytes / ours.peak_rss_bytes:.2f}x")
    print()
    for t in results.targets:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in lineitem (default %(default)s)")
    p.add_argument("--db", default=DEFAULT_DB, help="database to create and use (default %(default)s)")
    p.add_argument("--server", default=os.environ.get(SERVER_ENV) or FALLBACK_SERVER,
                   help=f"server URL without a database or password (default ${SERVER_ENV}, else {FALLBACK_SERVER})")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (reused next time)")
    p.add_argument("--skip-pandas", action="store_true", help="run our pipeline only")
    p.add_argument("--scaling", action="store_true", help="also run ours at 2x rows; check RSS stays flat")
    p.add_argument("--server-floor", action="store_true",
                   help="also time the ordered query on the server alone (EXPLAIN ANALYZE)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each pipeline this many times; report the fastest time, the highest RSS")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--workdir", type=Path, default=None, help="where outputs are written (a temporary folder)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="connections generating rows in parallel (default %(default)s)")
    # internal: the parent runs each pipeline as `--child NAME` in a fresh interpreter
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--child-url", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        p.error("--rows and --repeat must be positive")
    if not _DB_NAME.match(args.db) or args.db in {"postgres", "template0", "template1"}:
        p.error(f"--db {args.db!r}: use a new lower-case name (it is dropped afterwards unless --keep)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.child_url, args.child_out, args.child_result)
        return 0

    url = db_url(args.server, args.db)
    results = Results(database=args.db)
    sizes = [args.rows, 2 * args.rows] if args.scaling else [args.rows]
    with tempfile.TemporaryDirectory(prefix="snapshot-bench-", dir=args.workdir) as tmp:
        try:
            for n in sizes:
                prepare_database(args.server, args.db, n, max(1, args.jobs))
                if args.server_floor:
                    results.server_floor_seconds[n] = server_floor_seconds(args.server, args.db)
                    _log(f"server-side floor at {n:,} rows: {results.server_floor_seconds[n]:.1f}s")
                results.runs.append(run_repeated("ours", url, n, Path(tmp), args.repeat))
                if not args.skip_pandas and n == args.rows:
                    results.runs.append(run_repeated("pandas", url, n, Path(tmp), args.repeat))
        finally:
            if not args.keep:
                drop_database(args.server, args.db)

    evaluate(results, args.rows, args.scaling)
    if args.json:
        print(json.dumps({
            "rows": args.rows,
            "database": results.database,
            "cpu_count": os.cpu_count(),
            "server_floor_seconds": results.server_floor_seconds,
            "runs": [r.as_dict() for r in results.runs],
            "targets": [asdict(t) for t in results.targets],
        }, indent=2))
    else:
        print_report(results, args.rows)
    missed = [t for t in results.targets if not t.passed]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
