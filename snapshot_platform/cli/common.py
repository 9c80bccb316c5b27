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

# exit codes of every command (the convention, documented in the README's "Exit status"):
EXIT_OK = 0
# the data says no: an integrity problem, a failed check, a snapshot that failed, not reproduced, or
# no published version of a known snapshot's valid partition
EXIT_FAILED = 1
# usage: bad arguments, an unknown snapshot (the message lists the known ones), a malformed or
# out-of-range partition key (the message names the expected form); (reproduce, compare) a run or
# lock that cannot be had
EXIT_USAGE = 2
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


class CannotProceed(click.ClickException):
    """Exit status 2: the command could not do its job (a run, lock or version is missing or corrupt)."""

    exit_code = EXIT_USAGE


class UsageProblem(click.ClickException):
    """Exit status 2: the arguments are wrong (an unknown snapshot, a malformed partition key)."""

    exit_code = EXIT_USAGE


class NoData(click.ClickException):
    """Exit status 1: the arguments are right, the data says no (no published version of it)."""

    exit_code = EXIT_FAILED


def check_name(store: SnapshotStore, name: str | None) -> None:
    """A snapshot name that cannot be a storage path component is a usage error, not a traceback."""
    if name is not None:
        try:
            store.partitions(name)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None


def known_snapshots(ctx: click.Context, store: SnapshotStore) -> tuple[list[str], Any]:
    """The snapshot names the catalog and the storage know (sorted), and the catalog (None if unusable)."""
    try:
        catalog = load_catalog(ctx.obj["catalog"])
    except CatalogError:
        catalog = None
    names = set(catalog.snapshots) if catalog is not None else set()
    try:
        names |= set(store.assets())
    except OSError:
        pass
    return sorted(names), catalog


def unknown_snapshot(name: str, known: list[str], catalog: Any, store: Any) -> UsageProblem:
    """Exit 2 for ``name``, listing the snapshots ``catalog`` and ``store`` (None: only the catalog) know."""
    places = [f"the catalog {catalog.path}" if catalog is not None else None,
              f"the storage {store.uri(store.root)}" if store is not None else None]
    where = " and ".join(p for p in places if p)
    listed = ", ".join(known) if known else "none"
    return UsageProblem(f"unknown snapshot {name!r}: the snapshots known to {where} are: {listed}")


def require_snapshot(ctx: click.Context, store: SnapshotStore, name: str, partition: str | None = None) -> None:
    """Exit 2 unless NAME is a snapshot the catalog or the storage knows and PARTITION one of its keys.

    A catalog entry's key must be canonical and within its start and end (its window may be open:
    reading is not snapshotting); a snapshot only in the storage takes the form of its stored keys.
    """
    from snapshot_platform.catalog.windows import PartitionKeyError, window_for
    from snapshot_platform.store.files import safe_component

    check_name(store, name)
    known, catalog = known_snapshots(ctx, store)
    if name not in known:
        raise unknown_snapshot(name, known, catalog, store)
    if partition is None:
        return
    try:
        safe_component(partition, "partition")
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    if catalog is not None and name in catalog.snapshots:
        try:
            window_for(catalog.snapshots[name].partitions, partition, allow_open=True)
        except PartitionKeyError as exc:
            raise UsageProblem(str(exc)) from None
        return
    stored = store.partitions(name)
    if stored and partition not in stored and all(_is_day(p) for p in stored) and not _is_day(partition):
        raise UsageProblem(f"{partition!r} is not a daily partition key of {name}: expected YYYY-MM-DD "
                           f"(like {stored[0]!r})")


def _is_day(key: str) -> bool:
    import datetime as dt

    try:
        return dt.datetime.strptime(key, "%Y-%m-%d").strftime("%Y-%m-%d") == key
    except ValueError:
        return False


def fail(as_json: bool, message: str, error_class: type[click.ClickException] = CannotProceed, **fields: Any) -> None:
    """Stop with ``error_class`` (:class:`CannotProceed`, exit 2, unless told); with ``--json``, print
    ``fields`` and the error first."""
    if as_json:
        emit({**fields, "error": message})
    raise error_class(message)


def tracking(tracking_uri: str | None) -> Any:
    """The MLflow tracking client for ``--tracking-uri``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from snapshot_platform.training.mlflow_logging import MlflowTracking

    return MlflowTracking(tracking_uri)


tracking_option = click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
    help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<platform home>/mlflow.db).",
)
