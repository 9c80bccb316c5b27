"""What every command shares: the store and catalog from the click context, exit codes, errors.

Kept apart from ``cli/__init__.py`` (which imports the command modules) so that no import cycle
runs through the package.
"""

from __future__ import annotations

import os
from typing import Any

import click

from snapshot_platform.catalog import CatalogError, load_catalog
from snapshot_platform.cli.render import emit
from snapshot_platform.store import SnapshotStore

# exit codes of every command
EXIT_OK = 0
EXIT_FAILED = 1  # an integrity problem, a failed check, a snapshot that failed, not reproduced
EXIT_USAGE = 2  # bad arguments, or (reproduce, compare, diff) the command could not do its job
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM


def store_of(ctx: click.Context) -> SnapshotStore:
    """The store named by ``--storage`` (or its default)."""
    return SnapshotStore(ctx.obj["storage"])


def catalog_of(ctx: click.Context) -> Any:
    """The catalog named by ``--catalog`` (or its default); a bad one is a one-line error."""
    try:
        return load_catalog(ctx.obj["catalog"])
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


def check_name(store: SnapshotStore, name: str | None) -> None:
    """A snapshot name that cannot be a storage path component is a usage error, not a traceback."""
    if name is not None:
        try:
            store.partitions(name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None


class CannotProceed(click.ClickException):
    """Exit status 2: the command could not do its job (a run, lock or version is missing or corrupt)."""

    exit_code = EXIT_USAGE


def fail(as_json: bool, message: str, **fields: Any) -> None:
    """Stop with :class:`CannotProceed`; with ``--json``, print ``fields`` and the error first."""
    if as_json:
        emit({**fields, "error": message})
    raise CannotProceed(message)


def tracking(tracking_uri: str | None) -> Any:
    """The MLflow tracking client for ``--tracking-uri``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from snapshot_platform.training.mlflow_logging import MlflowTracking

    return MlflowTracking(tracking_uri)


tracking_option = click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
    help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<platform home>/mlflow.db).",
)
