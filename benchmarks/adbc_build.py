"""ADBC's PostgreSQL decoding: the installed driver against the last release built with optimisation.

The ``adbc-driver-postgresql`` wheels on PyPI from 1.9.0 on (1.13.0 included, which we need: it is
the first to report each column's PostgreSQL type) hold a ``libadbc_driver_postgresql.so`` compiled
without optimisation: its symbol table has out-of-line copies of functions every optimising build
inlines (``__bswap_32``, ``std::vector::operator[]``), and ``adbcpq::SwapNetworkToHost`` pushes a
frame to call ``__bswap_32``. 1.8.0's wheel is an optimised build. Decoding the binary COPY is about
half of our snapshot's CPU, so this benchmark measures what that costs, on the same query and the
same data, in one run:

* ``installed``: the driver this environment has (``adbc_driver_postgresql._driver_path()``);
* ``optimised``: 1.8.0's driver, fetched with ``pip download --no-deps`` into ``--cache`` (or
  ``--driver PATH``: any other build, e.g. one compiled from source with ``-O2``).

Each run is a fresh process that reads the partition of ``benchmarks/snapshot_throughput.py``'s
``lineitem`` table with the select list our PostgreSQL source sends (NUMERIC as text, the rest as
the driver decodes it), ordered by the key, through ``adbc_driver_manager`` with that driver, and
throws the batches away: only the server's work and the driver's decoding. The runs alternate
(installed, optimised, ...; ``--repeat`` pairs). Reported: each run's wall and CPU seconds, the
medians, their ratio, the load average, and whether each library looks optimised (the
``__bswap_32`` symbol, read with ``nm``).

    .venv/bin/python benchmarks/adbc_build.py                   # 2M rows, 3 pairs
    .venv/bin/python benchmarks/adbc_build.py --rows 200000 --repeat 1

The database is ``snapshot_throughput.py``'s (``--db``, default ``snapshot_bench``), created and
filled as that benchmark does when it does not hold the rows yet, and kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from snapshot_throughput import (  # benchmarks/ is on sys.path when run
    DEFAULT_DB,
    FALLBACK_SERVER,
    KEY,
    QUERY,
    SERVER_ENV,
    WINDOW_END,
    WINDOW_START,
    db_url,
    prepare_database,
)

OPTIMISED_RELEASE = "1.8.0"  # the last adbc-driver-postgresql wheel built with optimisation


def our_sql(url: str) -> str:
    """The statement our PostgreSQL source streams for the partition: its select list (NUMERIC as
    text, the rest as the driver decodes it), the window as typed literals, ordered by the key."""
    import adbc_driver_postgresql.dbapi as pg_dbapi

    from snapshot_platform.sources import Window
    from snapshot_platform.sources.base import ordered
    from snapshot_platform.sources.postgres import window_sql
    from snapshot_platform.sources.postgres_types import catalog_facts, transfer_plan

    with pg_dbapi.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        bound = window_sql(QUERY, Window(WINDOW_START, WINDOW_END))
        cur.execute(f"SELECT * FROM (\n{bound}\n) AS snapshot_query LIMIT 0")
        probe = cur.fetch_arrow_table().schema
        plan = transfer_plan(probe, **catalog_facts(cur, probe))
    return ordered(bound, KEY, select=plan.select)


def _log(msg: str) -> None:
    print(f"[adbc {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def installed_driver() -> Path:
    import adbc_driver_postgresql

    return Path(adbc_driver_postgresql._driver_path())


def fetched_driver(cache: Path) -> Path:
    """1.8.0's library, from its wheel (downloaded once into ``cache``)."""
    lib = cache / OPTIMISED_RELEASE / "libadbc_driver_postgresql.so"
    if lib.exists():
        return lib
    wheels = cache / "wheels"
    _log(f"downloading adbc-driver-postgresql {OPTIMISED_RELEASE} (no dependencies) into {wheels}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "--dest", str(wheels), f"adbc-driver-postgresql=={OPTIMISED_RELEASE}"], check=True)
    import zipfile

    wheel = next(wheels.glob(f"adbc_driver_postgresql-{OPTIMISED_RELEASE}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith("libadbc_driver_postgresql.so"))
        lib.parent.mkdir(parents=True, exist_ok=True)
        lib.write_bytes(z.read(member))
    return lib


def looks_optimised(lib: Path) -> str:
    """'yes', 'no' (an out-of-line __bswap_32: nothing was inlined) or 'unknown' (stripped, no nm)."""
    nm = shutil.which("nm")
    if nm is None:
        return "unknown"
    out = subprocess.run([nm, "--defined-only", str(lib)], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return "unknown (no symbol table)"
    return "no" if " __bswap_32" in out.stdout else "yes"


def child(driver: str, url: str, sql: str) -> None:
    """One read through ``driver``: print rows, wall and CPU seconds as JSON."""
    import adbc_driver_manager
    import pyarrow as pa

    db = adbc_driver_manager.AdbcDatabase(driver=driver, uri=url)
    conn = adbc_driver_manager.AdbcConnection(db)
    stmt = adbc_driver_manager.AdbcStatement(conn)
    stmt.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(4 * 1024 * 1024)})  # as ours
    t0, c0 = time.perf_counter(), time.process_time()
    stmt.set_sql_query(sql)
    handle, _ = stmt.execute_query()
    rows = 0
    with pa.RecordBatchReader._import_from_c(handle.address) as reader:
        for batch in reader:
            rows += batch.num_rows
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stmt.close()
    conn.close()
    db.close()
    print(json.dumps({"rows": rows, "wall": wall, "cpu": cpu}))


def run(driver: Path, url: str, sql: str) -> dict[str, Any]:
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(driver), "--url", url, "--sql", sql]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": load}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000, help="rows in lineitem (default 2,000,000)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"database (default {DEFAULT_DB}, kept)")
    p.add_argument("--server", default=os.environ.get(SERVER_ENV, FALLBACK_SERVER),
                   help=f"server URL without a database (default ${SERVER_ENV}, else {FALLBACK_SERVER})")
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs (default 3)")
    p.add_argument("--driver", help=f"the library to compare with (default: {OPTIMISED_RELEASE}'s wheel)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "snapshot_platform_bench" / "adbc"),
                   help="where the downloaded wheel and library are kept")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--sql", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.url, args.sql)
        return 0

    prepare_database(args.server, args.db, args.rows, 2)
    url = db_url(args.server, args.db)
    sql = our_sql(url)
    import adbc_driver_postgresql

    drivers = {
        f"installed {adbc_driver_postgresql.__version__}": installed_driver(),
        ("other" if args.driver else f"optimised {OPTIMISED_RELEASE}"):
            Path(args.driver) if args.driver else fetched_driver(Path(args.cache)),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in drivers}
    for i in range(args.repeat):
        for name, lib in drivers.items():
            r = run(lib, url, sql)
            _log(f"{name}: {r['rows']:,} rows, wall {r['wall']:.2f}s, CPU {r['cpu']:.2f}s "
                 f"(load {r['load']:.2f})")
            runs[name].append(r)
    summary = {
        name: {
            "library": str(lib),
            "optimised": looks_optimised(lib),
            "wall_median": statistics.median(r["wall"] for r in runs[name]),
            "cpu_median": statistics.median(r["cpu"] for r in runs[name]),
            "runs": runs[name],
        }
        for name, lib in drivers.items()
    }
    (a, sa), (b, sb) = summary.items()
    result = {"rows": args.rows, "drivers": summary, "cpu_ratio": sa["cpu_median"] / sb["cpu_median"],
              "wall_ratio": sa["wall_median"] / sb["wall_median"], "loadavg_after": os.getloadavg()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"decoding {args.rows:,} lineitem rows (our select list), {args.repeat} pair(s), 2 cores; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'driver':<20} {'optimised':<26} {'wall s (median)':>16} {'CPU s (median)':>15}")
    for name, s in summary.items():
        print(f"{name:<20} {s['optimised']:<26} {s['wall_median']:>16.2f} {s['cpu_median']:>15.2f}")
    print(f"{a} / {b}: CPU {result['cpu_ratio']:.2f}x, wall {result['wall_ratio']:.2f}x "
          f"(the wall time waits on the server too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
