"""``snapshot-platform``: snapshot, list, show, verify and gc without a Dagster instance.

Every subcommand takes ``--json`` for scripts. ``verify`` exits non-zero on any mismatch.

The commands live by area (``snapshots.py``: snapshot, list, show, verify, gc, diff;
``training.py``: reproduce, compare; ``admin.py``: pools, demo), what they print in ``render.py``,
what they share (the store and catalog from the context, exit codes) in ``common.py``. Exit status:
0 ok; 1 the data says no (an integrity problem, a failed check, no published version of a known
snapshot's valid partition); 2 usage (an unknown snapshot, a malformed or out-of-range partition
key, a run that cannot be had); 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import click

from snapshot_platform.cli import admin, changes, drift, html_report, promotion, snapshots, training
from snapshot_platform.store import default_storage_url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snapshot_platform", prog_name="snapshot-platform")
@click.option("--storage", envvar="SNAPSHOT_PLATFORM_STORAGE_URL", default=None,
              help="Storage root (default $SNAPSHOT_PLATFORM_STORAGE_URL or ~/.snapshot_platform/storage).")
@click.option("--catalog", "catalog_path", envvar="SNAPSHOT_PLATFORM_CATALOG", default=None,
              help="Catalog YAML (default $SNAPSHOT_PLATFORM_CATALOG or the demo catalog).")
@click.pass_context
def main(ctx: click.Context, storage: str | None, catalog_path: str | None) -> None:
    """Pinned, immutable, verifiable snapshots of production databases."""
    ctx.ensure_object(dict)
    ctx.obj["storage"] = storage or default_storage_url()
    ctx.obj["catalog"] = catalog_path


for _command in (*snapshots.COMMANDS, *training.COMMANDS, *admin.COMMANDS, *drift.COMMANDS, *promotion.COMMANDS,
                 *html_report.COMMANDS, *changes.COMMANDS):
    main.add_command(_command)
