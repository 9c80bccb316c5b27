"""How long a big catalog takes to load: YAML parse, validation, and the Dagster definitions.

    .venv/bin/python benchmarks/catalog_load.py                 # 10,000 snapshots
    .venv/bin/python benchmarks/catalog_load.py --snapshots 2000 --python-yaml

Writes a catalog of N snapshots (one PostgreSQL source through ``{env: ...}``, daily partitions,
checks and tags on each) into a temporary folder, then times, in this process:
``yaml`` parsing alone (libyaml's C parser, or PyYAML's pure-Python one with ``--python-yaml``),
``load_catalog`` (parse + validation), ``build_definitions`` (every asset, check and schedule),
``get_repository_def()`` (resolving every job and schedule against the asset graph;
``build_definitions`` does it itself, so this line is about 0), then what a code server
(``dagster dev``, ``dagster code-server``) does on top when it loads the location:
``load_all_definitions()`` (it builds every job, the implicit asset job over every asset too) and
the repository snapshot it sends the webserver and the daemon (``RepositorySnap.from_def`` with the
job snapshots deferred, serialized), and the total of all that from ``load_catalog`` on (which parses
the YAML once more): the code location's full load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml


def write_catalog(path: Path, n: int) -> None:
    lines = ["sources:", "  warehouse:", "    kind: postgres", "    url: {env: BENCH_WAREHOUSE_URL}", "snapshots:"]
    for i in range(n):
        lines += [
            f"  table_{i:05d}:",
            "    source: warehouse",
            f"    description: Rows of table_{i:05d} in the partition's window",
            "    query: |",
            f"      SELECT id, updated_at, amount, status FROM table_{i:05d}",
            "      WHERE updated_at >= :partition_start AND updated_at < :partition_end",
            "    partitions: {cadence: daily, start: '2024-01-01'}",
            "    key: [id]",
            "    not_null: [id, updated_at]",
            "    tags: {domain: bench, tier: gold}",
            "    checks: {min_rows: 1, columns: {amount: {min: 0}}}",
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshots", type=int, default=10_000)
    p.add_argument("--python-yaml", action="store_true", help="force PyYAML's pure-Python parser")
    args = p.parse_args()

    from snapshot_platform.catalog import loading as catalog_module

    if args.python_yaml:
        catalog_module._YamlLoader = yaml.SafeLoader
    os.environ.setdefault("BENCH_WAREHOUSE_URL", "postgresql://reader@127.0.0.1:5432/bench")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshots.yaml"
        write_catalog(path, args.snapshots)
        text = path.read_text()
        print(f"{args.snapshots:,} snapshots, {len(text) / 1e6:.1f} MB of YAML, "
              f"parser: {catalog_module._YamlLoader.__name__}, load average {os.getloadavg()[0]:.1f}")
        t = time.perf_counter()
        catalog_module.load_yaml(text)
        print(f"  yaml parse:         {time.perf_counter() - t:6.2f} s")
        # Dagster's import: not timed
        from dagster._core.remote_representation.external_data import RepositorySnap
        from dagster._serdes import serialize_value

        from snapshot_platform.orchestration.definitions import build_definitions

        t = started = time.perf_counter()
        catalog = catalog_module.load_catalog(path)
        print(f"  load_catalog:       {time.perf_counter() - t:6.2f} s")
        t = time.perf_counter()
        defs = build_definitions(catalog)
        print(f"  build_definitions:  {time.perf_counter() - t:6.2f} s")
        t = time.perf_counter()
        repo = defs.get_repository_def()
        print(f"  get_repository_def: {time.perf_counter() - t:6.2f} s "
              f"({len(repo.schedule_defs)} schedules, {len(repo.assets_defs_by_key)} assets)")
        t = time.perf_counter()
        repo.load_all_definitions()  # a code server's load: every job, the implicit asset job too
        print(f"  load_all_definitions: {time.perf_counter() - t:6.2f} s ({len(repo.get_all_jobs())} jobs)")
        t = time.perf_counter()
        # what the code server then sends the webserver and daemon (dagster's own call, snapshots deferred)
        snap = serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))
        print(f"  repository snapshot:  {time.perf_counter() - t:6.2f} s ({len(snap) / 1e6:.1f} MB)")
        total = time.perf_counter() - started
        print(f"  total:              {total:6.2f} s (the code location's load: every line from load_catalog on)")
        print(f"  load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
