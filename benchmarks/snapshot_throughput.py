"""Snapshot throughput: ``snapshot-platform snapshot`` against DuckDB, ConnectorX, pandas and raw COPY.

The benchmark creates its own database on a PostgreSQL server and fills a TPC-H-shaped ``lineitem``
table with ``generate_series`` (server side; reused when it already holds the asked-for rows), with
its primary key ``(l_orderkey, l_linenumber)`` (the table clustered on it) and a load time
``l_loaded_at`` that puts every row in one daily partition (2024-01-01). Then each pipeline reads
that partition, ordered by the primary key, into zstd Parquet, each as a separate process whose
whole wall time (interpreter start and imports included), peak RSS (``os.wait4`` of that child)
and CPU seconds are measured, with the 1-minute load average before it started:

* **copy**: raw binary COPY of the ordered query to /dev/null (``psql \\copy ... with (format
  binary)``): what the server needs to produce and send the rows, nothing decoded;
* **ours**: ``snapshot-platform snapshot lineitem 2024-01-01`` (ADBC binary COPY → Arrow → zstd
  Parquet parts, hashed, checked, published with a manifest) into a fresh storage folder;
* **duckdb**: DuckDB's postgres extension, ``COPY (SELECT * FROM postgres_query(...)) TO ... (FORMAT
  parquet, COMPRESSION zstd)``;
* **connectorx**: ``connectorx.read_sql(return_type="arrow_stream")`` → ``pyarrow.parquet.ParquetWriter``;
* **pandas**: ``pandas.read_sql`` (SQLAlchemy 2 + psycopg 3) + ``to_parquet``, only up to
  ``--pandas-max-rows`` (it holds the whole table in memory: about 1.7 GB per million rows);
* **dagster**: ``dagster asset materialize`` of the snapshot asset, and **dagster-floor**: the same
  command for a trivial partitioned asset (the CLI and step start-up every run pays); the snapshot's
  own cost through Dagster is the difference;
* **breakdown**: our pipeline's stages run one after another in one process, each timed: the
  server's execution alone (EXPLAIN ANALYZE), reading and decoding (ADBC), the exact conversion to
  the snapshot's types, the checks, Parquet encoding, hashing; and **start-up**: a process importing
  what the snapshot command imports.

The peers run the same SQL: ``SELECT * FROM lineitem WHERE l_loaded_at >= TIMESTAMPTZ '...' AND
l_loaded_at < TIMESTAMPTZ '...' ORDER BY l_orderkey, l_linenumber``; ours renders its window the same
way (typed literals). Targets (PASS/FAIL lines): ours no slower than the fastest of DuckDB and
ConnectorX; through Dagster, the snapshot beyond the floor within 1.3x the raw COPY; ours' peak RSS at
most 300 MB, and flat (within 15%) when the rows double (``--scaling``). The exit status is 0
whatever the results unless ``--check`` is given.

Usage (from the repository root; ``make bench`` installs the peers first: the ``bench`` extra)::

    .venv/bin/python benchmarks/snapshot_throughput.py                      # 2M rows, every pipeline
    .venv/bin/python benchmarks/snapshot_throughput.py --rows 200000        # quick
    .venv/bin/python benchmarks/snapshot_throughput.py --rows 2000000 6000000 --scaling  # and 12M
    .venv/bin/python benchmarks/snapshot_throughput.py --repeat 3 --keep    # best of 3, keep the data

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
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROWS = [2_000_000]
DEFAULT_DB = "snapshot_bench"
SERVER_ENV = "SNAPSHOT_BENCH_SERVER"
FALLBACK_SERVER = "postgresql://postgres@127.0.0.1:5432"
PANDAS_MAX_ROWS = 2_000_000

SNAPSHOT = "lineitem"
PARTITION = "2024-01-01"  # every row's l_loaded_at is in this day
KEY = ["l_orderkey", "l_linenumber"]  # the primary key: unique, so the order is total
QUERY = "SELECT * FROM lineitem WHERE l_loaded_at >= :partition_start AND l_loaded_at < :partition_end"
WINDOW_START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
WINDOW_END = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
# what the peers run: the window as the typed literals our source renders, ordered by the key
PEER_SQL = ("SELECT * FROM lineitem WHERE l_loaded_at >= TIMESTAMPTZ '2024-01-01 00:00:00.000000+00'"
            " AND l_loaded_at < TIMESTAMPTZ '2024-01-02 00:00:00.000000+00'"
            " ORDER BY l_orderkey, l_linenumber")

TARGET_PANDAS_SPEEDUP = 5.0
TARGET_PEAK_RSS_BYTES = 300 * 10**6
TARGET_FLAT_TOLERANCE = 0.15
TARGET_DAGSTER_OVER_COPY = 1.3
PEERS = ("duckdb", "connectorx")

GENERATOR_TAG = "snapshot_throughput lineitem v2"
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
    l_comment       text           NOT NULL,
    l_loaded_at     timestamptz    NOT NULL  -- when the row arrived: the daily partition's column
)
"""

# Row i (1-based) of the data set. Four lines per order; the value distributions follow TPC-H's
# dbgen (dates 1992-1998, prices from the part key, flags from the dates); comments are word-like
# slices of a fixed text so that they compress like real prose rather than like random hex. Every row
# was loaded on 2024-01-01 (one daily partition), spread over the day.
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
       substr(%(words)s, 1 + floor(random() * (length(%(words)s) - 44))::int, 10 + floor(random() * 34)::int),
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + ((orderkey * 4 + linenumber) %% 86400) * interval '1 second'
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
        _log(f"generated in {time.monotonic() - started:.1f}s; primary key, cluster, vacuum analyze")
        if conn.execute("SELECT to_regclass('lineitem_pkey')").fetchone()[0] is None:
            conn.execute("ALTER TABLE lineitem ADD CONSTRAINT lineitem_pkey"
                         " PRIMARY KEY (l_orderkey, l_linenumber)")
        conn.execute("CLUSTER lineitem USING lineitem_pkey")  # rows in key order, as appended rows are
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


def server_seconds(url: str) -> tuple[float, str]:
    """The server's execution of the peers' query alone (no rows sent: EXPLAIN ANALYZE), and the
    top node of its plan."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        plan = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + PEER_SQL).fetchone()[0]
    top = plan[0]["Plan"]
    node = top["Node Type"] + (f" using {top['Index Name']}" if "Index Name" in top else "")
    return plan[0]["Execution Time"] / 1000.0, node


# ---------------------------------------------------------------- the pipelines (child side)


def child_duckdb(url: str, out: Path) -> dict[str, Any]:
    import duckdb
    import duckdb_ext  # the duckdb-ext-postgres wheel: the extension without a download

    path = out / "lineitem.parquet"
    con = duckdb.connect()
    extensions = Path(next(iter(duckdb_ext.__path__))) / "extensions"
    con.execute(f"SET extension_directory = '{extensions}'")
    con.execute("LOAD postgres")
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
    quoted = PEER_SQL.replace("'", "''")
    rows = con.execute(f"COPY (SELECT * FROM postgres_query('pg', '{quoted}')) TO '{path}'"
                       " (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]  # COPY says how many rows
    return {"rows": rows, "output_bytes": path.stat().st_size, "detail": f"duckdb {duckdb.__version__}"}


def child_connectorx(url: str, out: Path) -> dict[str, Any]:
    import connectorx as cx
    import pyarrow.parquet as pq

    path = out / "lineitem.parquet"
    reader = cx.read_sql(url, PEER_SQL, return_type="arrow_stream", batch_size=131_072)
    rows = 0
    writer = None
    for batch in reader:
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is not None:
        writer.close()
    return {"rows": rows, "output_bytes": path.stat().st_size if path.exists() else 0,
            "detail": f"connectorx {cx.__version__}, batch_size 131,072"}


def child_pandas(url: str, out: Path) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    path = out / "lineitem.parquet"
    with engine.connect() as conn:
        df = pd.read_sql(sa.text(PEER_SQL), conn)
    df.to_parquet(path)
    engine.dispose()
    return {"rows": len(df), "output_bytes": path.stat().st_size,
            "detail": "SQLAlchemy + psycopg 3, pyarrow engine, default (snappy) compression"}


def child_startup(url: str, out: Path) -> dict[str, Any]:
    """What ``snapshot-platform snapshot`` imports before it reads a row (the process is the measure)."""
    import snapshot_platform.cli  # noqa: F401
    import snapshot_platform.sources.adbc_client  # noqa: F401
    from snapshot_platform.capture import take_snapshot  # noqa: F401
    from snapshot_platform.catalog.windows import window_for  # noqa: F401

    return {"rows": 0, "output_bytes": 0, "detail": "interpreter + the snapshot command's imports"}


def child_breakdown(url: str, out: Path) -> dict[str, Any]:
    """Our pipeline's stages one after another in this thread, each timed in wall and CPU seconds
    (the real pipeline overlaps reading with writing in two threads): read and decode, convert,
    check, cut parts, encode, hash."""
    import contextlib
    import hashlib
    import inspect

    import adbc_driver_postgresql.dbapi as pg_dbapi

    from snapshot_platform.catalog import parse_catalog
    from snapshot_platform.checks import CheckRun, History
    from snapshot_platform.sources import Window
    from snapshot_platform.sources.base import ordered
    from snapshot_platform.sources.postgres import window_sql
    from snapshot_platform.sources.postgres_types import apply_plan, catalog_facts, transfer_plan
    from snapshot_platform.store import WriterSettings, schema_to_json
    from snapshot_platform.store import writer

    clock: dict[str, list[float]] = {k: [0.0, 0.0] for k in STAGE_NAMES}

    @contextlib.contextmanager
    def timed(stage: str) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            clock[stage][0] += time.perf_counter() - wall
            clock[stage][1] += time.thread_time() - cpu

    cutter = getattr(writer, "PartCutter", None)
    if cutter is not None:  # the key hash that cuts parts (store/boundaries.py), timed on its own
        class TimedCutter(cutter):  # type: ignore[misc, valid-type]
            def cuts(self, batch: Any) -> Any:
                with timed("part_cuts"):
                    return super().cuts(batch)

        writer.PartCutter = TimedCutter
    spec = parse_catalog(catalog_doc(url), path="<benchmark>").snapshots[SNAPSHOT]
    with pg_dbapi.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        bound = window_sql(QUERY, Window(WINDOW_START, WINDOW_END))
        cur.execute(f"SELECT * FROM (\n{bound}\n) AS snapshot_query LIMIT 0")
        probe = cur.fetch_arrow_table().schema
        plan = transfer_plan(probe, **catalog_facts(cur, probe))
        checks = CheckRun(spec, schema_to_json(plan.schema, plan.source_types), History())
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(4 * 1024 * 1024)})
        total_wall, total_cpu = time.perf_counter(), time.thread_time()
        cur.execute(ordered(bound, KEY, select=plan.select))
        reader = cur.fetch_record_batch()

        def stream() -> Any:
            while True:
                with timed("read_decode"):
                    batch = next(reader, None)
                if batch is None:
                    return
                with timed("convert"):
                    batch = apply_plan(plan, batch, "bench")
                with timed("checks"):
                    checks.add(batch)
                yield batch

        cut_by_key = {"key": KEY} if "key" in inspect.signature(writer.write_parts).parameters else {}
        written = writer.write_parts(stream(), plan.schema, lambda name: open(out / name, "wb"),
                                     WriterSettings(), **cut_by_key)
        total_wall, total_cpu = time.perf_counter() - total_wall, time.thread_time() - total_cpu
        reader.close()
    with timed("checks"):
        checks.outcomes()
    with timed("hash"):  # the parts' bytes hashed again (the store hashes them as it writes them)
        for part in written.parts:
            hashlib.sha256((out / part.path).read_bytes()).hexdigest()
    accounted = [sum(v[i] for k, v in clock.items() if k not in ("encode", "hash")) + clock["hash"][i]
                 for i in (0, 1)]
    clock["encode"] = [total_wall - accounted[0], total_cpu - accounted[1]]
    return {"rows": written.row_count, "output_bytes": sum(p.bytes for p in written.parts),
            "detail": f"stages one after another, {len(written.parts)} part(s)", "stages": clock}


CHILDREN = {"duckdb": child_duckdb, "connectorx": child_connectorx, "pandas": child_pandas,
            "startup": child_startup, "breakdown": child_breakdown}


def child_main(pipeline: str, url: str, out: Path, result_file: Path) -> None:
    result = CHILDREN[pipeline](url, out)
    result_file.write_text(json.dumps(result))


# ---------------------------------------------------------------- our commands (parent side)


def catalog_doc(url: str) -> dict[str, Any]:
    return {
        # the benchmark reads its own throwaway database as the admin that created it
        "sources": {"bench": {"kind": "postgres", "url": url, "allow_privileged_role": True}},
        "snapshots": {
            SNAPSHOT: {
                "source": "bench",
                "query": QUERY,
                "partitions": {"cadence": "daily", "start": PARTITION},
                "key": KEY,
            }
        },
    }


TRIVIAL_ASSET = f"""
from dagster import DailyPartitionsDefinition, asset


@asset(partitions_def=DailyPartitionsDefinition(start_date="{PARTITION}", timezone="UTC"))
def trivial() -> None:
    return None
"""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def command(pipeline: str, url: str, out: Path, result_file: Path,
            setup: Path) -> tuple[list[str], dict[str, str]]:
    """The process of ``pipeline`` and its environment; its outputs go under ``out``."""
    env = {**os.environ, "SNAPSHOT_PLATFORM_HOME": str(out / "home"),
           "SNAPSHOT_PLATFORM_STORAGE_URL": str(out / "storage"),
           "SNAPSHOT_PLATFORM_CATALOG": str(setup / "catalog.json"),
           "DAGSTER_HOME": str(out / "dagster_home")}
    (out / "dagster_home").mkdir()
    if pipeline == "copy":
        return [shutil.which("psql") or "psql", "-X", "-q", "-d", url, "-c",
                f"\\copy ({PEER_SQL}) to /dev/null with (format binary)"], env
    if pipeline == "ours":
        return [_bin("snapshot-platform"), "snapshot", SNAPSHOT, PARTITION, "--json"], env
    if pipeline == "dagster":
        return [_bin("dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
                "--select", f"snapshots/{SNAPSHOT}", "--partition", PARTITION], env
    if pipeline == "dagster-floor":
        return [_bin("dagster"), "asset", "materialize", "-f", str(setup / "trivial_asset.py"),
                "--select", "trivial", "--partition", PARTITION], env
    return [sys.executable, str(Path(__file__).resolve()), "--child", pipeline, "--child-url", url,
            "--child-out", str(out), "--child-result", str(result_file)], env


def _published(out: Path) -> dict[str, Any]:
    from snapshot_platform.store import SnapshotStore

    m = SnapshotStore(str(out / "storage")).latest(SNAPSHOT, PARTITION)
    failed = [n for n, c in (m.checks or {}).items() if not c.passed]
    return {"rows": m.row_count, "output_bytes": sum(f.bytes for f in m.files),
            "detail": f"version {m.version}, zstd level {m.writer['compression_level']}"
                      + (f", failed checks {failed}" if failed else ", every check passed")}


# ---------------------------------------------------------------- running and reporting (parent side)


@dataclass
class Run:
    pipeline: str
    rows_in_table: int
    rows: int
    seconds: float  # the whole process: interpreter start, imports, the work, exit
    peak_rss_bytes: int
    output_bytes: int
    cpu_seconds: float
    load_before: float
    detail: str
    stages: dict[str, list[float]] = field(default_factory=dict)  # the breakdown's [wall, CPU] per stage
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
    server_seconds: dict[int, float] = field(default_factory=dict)
    server_plan: dict[int, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, pipeline: str, rows: int) -> Run | None:
        return next((r for r in self.runs if r.pipeline == pipeline and r.rows_in_table == rows), None)


def run_pipeline(pipeline: str, url: str, rows: int, workdir: Path, setup: Path) -> Run:
    """Run one pipeline as its own process; its peak RSS comes from wait4() on that very child."""
    out = Path(tempfile.mkdtemp(prefix=f"{pipeline}-", dir=workdir))
    result_file = out / "result.json"
    cmd, env = command(pipeline, url, out, result_file, setup)
    load_before = os.getloadavg()[0]
    _log(f"{pipeline}: {rows:,} rows in a fresh process (load average {load_before:.2f})")
    log_path = out / "output.log"
    try:
        with open(log_path, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the {pipeline} pipeline failed (exit status {code}):\n{tail}")
        if pipeline == "copy":
            got = {"rows": rows, "output_bytes": 0, "detail": "psql \\copy, binary, to /dev/null"}
        elif pipeline in ("ours", "dagster"):
            got = _published(out)
        elif pipeline == "dagster-floor":
            got = {"rows": 0, "output_bytes": 0, "detail": "a trivial partitioned asset"}
        else:
            got = json.loads(result_file.read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    run = Run(pipeline=pipeline, rows_in_table=rows, seconds=seconds, peak_rss_bytes=usage.ru_maxrss * 1024,
              cpu_seconds=usage.ru_utime + usage.ru_stime, load_before=load_before, **got)
    _log(f"{pipeline}: {run.seconds:.1f}s, peak RSS {run.peak_rss_bytes / 1e6:,.0f} MB, "
         f"CPU {run.cpu_seconds:.1f}s, {run.output_bytes / 1e6:,.1f} MB written")
    return run


def best_of(runs: list[Run]) -> Run:
    """The fastest run (other load only ever adds time), with the highest peak RSS of all."""
    best = min(runs, key=lambda r: r.seconds)
    best.peak_rss_bytes = max(r.peak_rss_bytes for r in runs)
    best.all_seconds = [r.seconds for r in runs]
    return best


def evaluate(results: Results, sizes: list[int], scaling: bool) -> None:
    add = results.targets.append
    for run in results.runs:
        if run.pipeline not in ("copy", "dagster-floor", "startup") and run.rows != run.rows_in_table:
            add(Target(f"{run.pipeline} at {run.rows_in_table:,} rows: row count", False,
                       f"wrote {run.rows:,} rows, the table holds {run.rows_in_table:,}"))
    for n in sizes:
        ours = results.find("ours", n)
        if ours is None:
            continue
        peers = [p for p in (results.find(name, n) for name in PEERS) if p is not None]
        if peers:
            fastest = min(peers, key=lambda r: r.seconds)
            add(Target(f"ours no slower than the fastest of DuckDB and ConnectorX at {n:,} rows",
                       ours.seconds <= fastest.seconds,
                       f"ours {ours.seconds:.1f}s, {fastest.pipeline} {fastest.seconds:.1f}s "
                       f"({fastest.seconds / ours.seconds:.2f}x)"))
        add(Target(f"ours peak RSS <= {TARGET_PEAK_RSS_BYTES / 1e6:,.0f} MB at {n:,} rows",
                   ours.peak_rss_bytes <= TARGET_PEAK_RSS_BYTES, f"{ours.peak_rss_bytes / 1e6:,.0f} MB"))
        pandas = results.find("pandas", n)
        if pandas:
            add(Target(f"ours >= {TARGET_PANDAS_SPEEDUP:g}x faster than pandas at {n:,} rows",
                       pandas.seconds >= TARGET_PANDAS_SPEEDUP * ours.seconds,
                       f"{pandas.seconds / ours.seconds:.2f}x "
                       f"({pandas.seconds:.1f}s vs {ours.seconds:.1f}s)"))
        dagster, floor = results.find("dagster", n), results.find("dagster-floor", n)
        copy = results.find("copy", n)
        if dagster and floor and copy:
            beyond = dagster.seconds - floor.seconds
            add(Target(f"through Dagster, the snapshot beyond the trivial-asset floor within "
                       f"{TARGET_DAGSTER_OVER_COPY:g}x the raw COPY at {n:,} rows",
                       beyond <= TARGET_DAGSTER_OVER_COPY * copy.seconds,
                       f"{dagster.seconds:.1f}s - {floor.seconds:.1f}s = {beyond:.1f}s, "
                       f"{beyond / copy.seconds:.2f}x the COPY's {copy.seconds:.1f}s"))
    if scaling and len(sizes) >= 2:  # the largest --rows against its double
        small, big = results.find("ours", sizes[-2]), results.find("ours", sizes[-1])
        if small and big:
            growth = big.peak_rss_bytes / small.peak_rss_bytes - 1
            add(Target(f"ours peak RSS flat (within {TARGET_FLAT_TOLERANCE:.0%}) from {sizes[-2]:,} to "
                       f"{sizes[-1]:,} rows",
                       growth <= TARGET_FLAT_TOLERANCE,
                       f"{small.peak_rss_bytes / 1e6:,.0f} MB -> {big.peak_rss_bytes / 1e6:,.0f} MB "
                       f"({growth:+.1%})"))


STAGE_NAMES = {"read_decode": "read + decode (ADBC; its wall time waits on the server too)",
               "convert": "exact conversion (NUMERIC text -> decimal, dates checked)",
               "checks": "checks (key order, counts)",
               "part_cuts": "part boundaries (key hash, store/boundaries.py)",
               "encode": "Parquet encoding (zstd level 1)",
               "hash": "hashing (SHA-256 of the parts)"}


def print_report(results: Results, sizes: list[int]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores; load average now {load}")
    header = (f"{'pipeline':<14} {'rows':>11} {'whole s':>8} {'rows/s':>11} {'peak RSS MB':>12} "
              f"{'CPU s':>7} {'output MB':>10} {'load':>5}")
    print(header)
    print("-" * len(header))
    for r in results.runs:
        if r.pipeline == "breakdown":
            continue
        print(f"{r.pipeline:<14} {r.rows_in_table:>11,} {r.seconds:>8.1f} "
              f"{(r.rows_per_second if r.rows else 0):>11,.0f} {r.peak_rss_bytes / 1e6:>12,.0f} "
              f"{r.cpu_seconds:>7.1f} {r.output_bytes / 1e6:>10,.1f} {r.load_before:>5.2f}")
    for r in results.runs:
        line = f"  {r.pipeline} at {r.rows_in_table:,}: {r.detail}"
        if len(r.all_seconds) > 1:
            line += "; all times " + ", ".join(f"{t:.1f}s" for t in r.all_seconds)
        print(line)
    for n in sizes:
        print(f"\nat {n:,} rows:")
        if n in results.server_seconds:
            print(f"  server alone (EXPLAIN ANALYZE, {results.server_plan[n]}): "
                  f"{results.server_seconds[n]:.1f}s")
        ours = results.find("ours", n)
        for name in (*PEERS, "pandas", "copy"):
            other = results.find(name, n)
            if ours and other:
                print(f"  {name}/ours whole-process time: {other.seconds / ours.seconds:.2f}x")
        dagster, floor = results.find("dagster", n), results.find("dagster-floor", n)
        if dagster and floor:
            print(f"  through Dagster: {dagster.seconds:.1f}s, of which the trivial-asset floor "
                  f"{floor.seconds:.1f}s; the snapshot beyond it {dagster.seconds - floor.seconds:.1f}s")
        startup = results.find("startup", n)
        if startup:
            print(f"  start-up (interpreter + the snapshot command's imports): {startup.seconds:.2f}s, "
                  f"{startup.peak_rss_bytes / 1e6:,.0f} MB")
        b = results.find("breakdown", n)
        if b:
            wall = sum(v[0] for v in b.stages.values())
            cpu = sum(v[1] for v in b.stages.values())
            print(f"  our stages one after another in one thread ({wall:.1f}s wall, {cpu:.1f}s CPU; the "
                  f"pipeline overlaps reading with writing in two threads):")
            print(f"    {'stage':<62} {'wall s':>7} {'CPU s':>7} {'of CPU':>7}")
            for k, (w, c) in b.stages.items():
                print(f"    {STAGE_NAMES[k]:<62} {w:7.2f} {c:7.2f} {c / cpu:7.1%}")
    for note in results.notes:
        print(f"note: {note}")
    print()
    for t in results.targets:
        print(f"{'PASS' if t.passed else 'FAIL'}  {t.name}: {t.detail}")


def pipelines_for(n: int, args: argparse.Namespace) -> list[str]:
    chosen = ["copy", "ours", "duckdb", "connectorx"]
    if not args.skip_pandas and n <= args.pandas_max_rows:
        chosen.append("pandas")
    if not args.skip_dagster:
        chosen += ["dagster-floor", "dagster"]
    chosen += ["breakdown", "startup"]
    if args.only:
        chosen = [p for p in chosen if p in args.only]
    return chosen


ALL_PIPELINES = ["copy", "ours", "duckdb", "connectorx", "pandas", "dagster-floor", "dagster", "breakdown",
                 "startup"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=DEFAULT_ROWS,
                   help="rows in lineitem, one run of every pipeline per size (default %(default)s)")
    p.add_argument("--db", default=DEFAULT_DB, help="database to create and use (default %(default)s)")
    p.add_argument("--server", default=os.environ.get(SERVER_ENV) or FALLBACK_SERVER,
                   help=f"server URL without a database or password (default ${SERVER_ENV}, else {FALLBACK_SERVER})")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (reused next time)")
    p.add_argument("--skip-pandas", action="store_true", help="no pandas run")
    p.add_argument("--pandas-max-rows", type=int, default=PANDAS_MAX_ROWS,
                   help="run pandas only up to this many rows (default %(default)s: it holds the table in "
                        "memory)")
    p.add_argument("--skip-dagster", action="store_true", help="no dagster asset materialize runs")
    p.add_argument("--only", nargs="+", choices=ALL_PIPELINES, help="run only these pipelines")
    p.add_argument("--scaling", action="store_true",
                   help="also run ours at twice the largest --rows; check its peak RSS stays flat")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each pipeline this many times (interleaved); report the fastest time, the "
                        "highest RSS")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--workdir", type=Path, default=None, help="where outputs are written (a temporary folder)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="connections generating rows in parallel (default %(default)s)")
    # internal: the parent runs some pipelines as `--child NAME` in a fresh interpreter
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--child-url", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.rows) < 1 or args.repeat < 1:
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
    sizes = sorted(set(args.rows))
    plans = {n: pipelines_for(n, args) for n in sizes}
    if args.scaling:
        sizes.append(2 * sizes[-1])
        plans[sizes[-1]] = [p for p in ("ours",) if not args.only or p in args.only]
    for n in sizes:
        if not args.skip_pandas and n > args.pandas_max_rows and n in args.rows:
            results.notes.append(f"pandas skipped at {n:,} rows (over --pandas-max-rows "
                                 f"{args.pandas_max_rows:,}: it would hold about {n * 1.7 / 1e6:,.0f} GB)")
    with tempfile.TemporaryDirectory(prefix="snapshot-bench-", dir=args.workdir) as tmp:
        setup = Path(tmp) / "setup"
        setup.mkdir()
        (setup / "catalog.json").write_text(json.dumps(catalog_doc(url)))  # JSON is YAML
        (setup / "trivial_asset.py").write_text(TRIVIAL_ASSET)
        try:
            for n in sizes:
                prepare_database(args.server, args.db, n, max(1, args.jobs))
                results.server_seconds[n], results.server_plan[n] = server_seconds(url)
                _log(f"server alone at {n:,} rows: {results.server_seconds[n]:.1f}s "
                     f"({results.server_plan[n]})")
                runs: dict[str, list[Run]] = {p: [] for p in plans[n]}
                for _ in range(args.repeat):
                    for pipeline in plans[n]:
                        runs[pipeline].append(run_pipeline(pipeline, url, n, Path(tmp), setup))
                results.runs += [best_of(r) for r in runs.values()]
        finally:
            if not args.keep:
                drop_database(args.server, args.db)

    evaluate(results, sizes, args.scaling)
    if args.json:
        print(json.dumps({
            "sizes": sizes,
            "database": results.database,
            "cpu_count": os.cpu_count(),
            "server_seconds": results.server_seconds,
            "server_plan": results.server_plan,
            "runs": [r.as_dict() for r in results.runs],
            "targets": [asdict(t) for t in results.targets],
            "notes": results.notes,
        }, indent=2))
    else:
        print_report(results, sizes)
    missed = [t for t in results.targets if not t.passed]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
