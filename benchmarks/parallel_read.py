"""Parallel reads: one partition snapshotted over 1 connection and over K (``parallelism: K``).

The benchmark creates its own database on a PostgreSQL server (``snapshot_parallel_bench``, dropped
afterwards unless ``--keep``) holding the TPC-H-shaped ``lineitem`` table of
``benchmarks/snapshot_throughput.py`` (the same generator, the same query, key and window), then
snapshots that one partition with ``parallelism: 1`` and ``parallelism: K`` (default 2), each run a
fresh Python process (interpreter start, imports, catalog, the read and the publish into a new
storage folder: the whole process is timed, its peak RSS read with ``os.wait4``). The runs
alternate (1, K, 1, K, ...; ``--repeat`` pairs) so that a change in the machine's load hits both
alike; the 1-minute load average before each run is printed.

Reported: each run's wall time, peak RSS and CPU seconds, the median of each, the ratio of the
medians (serial / parallel: above 1 is a speed-up), and whether every run published the same
version id (it must: the version does not depend on K). Targets (PASS/FAIL): K connections faster
than one (ratio above 1), and one version id for all runs. ``--check`` exits 1 on a miss.

Usage (from the repository root)::

    .venv/bin/python benchmarks/parallel_read.py                 # 2M rows, 3 pairs, K=2
    .venv/bin/python benchmarks/parallel_read.py --rows 200000 --repeat 1   # quick
    .venv/bin/python benchmarks/parallel_read.py --connections 4 --json

The server is ``--server`` (default ``$SNAPSHOT_BENCH_SERVER``, else
``postgresql://postgres@127.0.0.1:5432``), without a database name; a password comes from libpq's
``PGPASSWORD`` or ``~/.pgpass``, never from a URL here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snapshot_throughput as dataset  # noqa: E402  (the data set, its query, key and window)

DEFAULT_ROWS = 2_000_000
DEFAULT_DB = "snapshot_parallel_bench"


def _log(msg: str) -> None:
    print(f"[parallel {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- one snapshot (child side)


def child(url: str, connections: int, out: Path) -> dict[str, Any]:
    from snapshot_platform.capture import take_snapshot
    from snapshot_platform.catalog import parse_catalog
    from snapshot_platform.sources import Window, make_source
    from snapshot_platform.store import SnapshotStore

    catalog = parse_catalog({
        # the benchmark reads its own throwaway database as the admin that created it
        "sources": {"bench": {"kind": "postgres", "url": url, "allow_privileged_role": True,
                              "parallelism": connections, "max_concurrent_queries": max(2, connections)}},
        "snapshots": {"lineitem": {"source": "bench", "query": dataset.QUERY, "key": dataset.KEY,
                                   "partitions": {"cadence": "daily", "start": "1990-01-01"}}},
    }, path="<benchmark>")
    spec = catalog.snapshots["lineitem"]
    started = time.perf_counter()
    outcome = take_snapshot(spec, make_source("bench", catalog.sources["bench"]),
                            Window(dataset.WINDOW_START, dataset.WINDOW_END), SnapshotStore(str(out)),
                            name="lineitem", partition_key="bench")
    m = outcome.result.manifest
    return {"snapshot_seconds": time.perf_counter() - started, "rows": m.row_count, "version": m.version,
            "read_connections": (m.source_state.get("parallel_read") or {}).get("connections", 1)}


# ---------------------------------------------------------------- runs (parent side)


@dataclass
class Run:
    connections: int
    seconds: float  # the whole process
    snapshot_seconds: float
    peak_rss_bytes: int
    cpu_seconds: float
    load_before: float
    rows: int
    version: str
    read_connections: int


def run_once(url: str, connections: int, workdir: Path) -> Run:
    out = Path(tempfile.mkdtemp(prefix=f"k{connections}-", dir=workdir))
    result = out.with_suffix(".json")
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(connections), "--child-url", url,
           "--child-out", str(out), "--child-result", str(result)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"the parallelism {connections} run failed (exit status {code})")
    got = json.loads(result.read_text())
    subprocess.run(["rm", "-rf", str(out), str(result)], check=False)
    run = Run(connections, seconds, got["snapshot_seconds"], usage.ru_maxrss * 1024,
              usage.ru_utime + usage.ru_stime, load, got["rows"], got["version"], got["read_connections"])
    _log(f"parallelism {connections}: {seconds:.2f}s whole process ({run.snapshot_seconds:.2f}s snapshot, "
         f"{run.read_connections} connection(s)), peak RSS {run.peak_rss_bytes / 1e6:.0f} MB, "
         f"load average before {load:.2f}")
    return run


def summarize(runs: list[Run], k: int) -> dict[str, Any]:
    serial = [r for r in runs if r.connections == 1]
    parallel = [r for r in runs if r.connections == k]
    s_med = statistics.median(r.seconds for r in serial)
    p_med = statistics.median(r.seconds for r in parallel)
    versions = sorted({r.version for r in runs})
    ratio = s_med / p_med
    return {
        "serial_median_seconds": s_med,
        "parallel_median_seconds": p_med,
        "speedup": ratio,
        "pair_speedups": [a.seconds / b.seconds for a, b in zip(serial, parallel)],
        "versions": versions,
        "loadavg_before": [r.load_before for r in runs],
        "targets": [
            {"name": f"parallelism {k} faster than 1 (median whole-process time)", "passed": ratio > 1.0,
             "detail": f"{ratio:.2f}x ({s_med:.2f}s vs {p_med:.2f}s)"},
            {"name": "one version id whatever the parallelism", "passed": len(versions) == 1,
             "detail": ", ".join(versions)},
            {"name": f"the parallel runs read over {k} connections",
             "passed": all(r.read_connections == k for r in parallel),
             "detail": ", ".join(str(r.read_connections) for r in parallel)},
        ],
    }


def print_report(rows: int, k: int, runs: list[Run], summary: dict[str, Any]) -> None:
    print(f"{rows:,} rows, parallelism 1 vs {k}, {os.cpu_count()} CPU(s), each run a fresh process")
    print(f"{'K':>3} {'whole s':>8} {'snapshot s':>10} {'peak RSS MB':>12} {'CPU s':>7} {'load':>6}  version")
    for r in runs:
        print(f"{r.connections:>3} {r.seconds:>8.2f} {r.snapshot_seconds:>10.2f} "
              f"{r.peak_rss_bytes / 1e6:>12.0f} {r.cpu_seconds:>7.1f} {r.load_before:>6.2f}  {r.version}")
    print(f"\nmedian whole process: 1 connection {summary['serial_median_seconds']:.2f}s, {k} connections "
          f"{summary['parallel_median_seconds']:.2f}s: speed-up {summary['speedup']:.2f}x "
          f"(per pair: {', '.join(f'{x:.2f}x' for x in summary['pair_speedups'])})\n")
    for t in summary["targets"]:
        print(f"{'PASS' if t['passed'] else 'FAIL'}  {t['name']}: {t['detail']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in lineitem (default %(default)s)")
    p.add_argument("--connections", type=int, default=2, help="K, the parallel runs' parallelism (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs (serial, parallel), alternating")
    p.add_argument("--db", default=DEFAULT_DB, help="database to create and use (default %(default)s)")
    p.add_argument("--server", default=os.environ.get(dataset.SERVER_ENV) or dataset.FALLBACK_SERVER,
                   help="server URL without a database or password")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards (reused next time)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-url", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or not 2 <= args.connections <= 64:
        p.error("--rows and --repeat must be positive, --connections between 2 and 64")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.db) or args.db in {"postgres", "template1"}:
        p.error(f"--db {args.db!r}: use a new lower-case name (it is dropped afterwards unless --keep)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        args.child_result.write_text(json.dumps(child(args.child_url, args.child, args.child_out)))
        return 0
    k = args.connections
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="snapshot-parallel-bench-") as tmp:
        try:
            dataset.prepare_database(args.server, args.db, args.rows, max(1, os.cpu_count() or 1))
            url = dataset.db_url(args.server, args.db)
            for _ in range(args.repeat):
                runs.append(run_once(url, 1, Path(tmp)))
                runs.append(run_once(url, k, Path(tmp)))
        finally:
            if not args.keep:
                dataset.drop_database(args.server, args.db)
    summary = summarize(runs, k)
    if args.json:
        print(json.dumps({"rows": args.rows, "connections": k, "cpu_count": os.cpu_count(),
                          "runs": [asdict(r) for r in runs], **summary}, indent=2))
    else:
        print_report(args.rows, k, runs, summary)
    missed = [t for t in summary["targets"] if not t["passed"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
