"""Take one snapshot: a snapshot's spec, its source and its window → source read → published store version.

This is the whole data path without Dagster (the asset calls it, so do the CLI and the benchmark).
The caller computes the window once (the asset from its partition, the CLI from the partition key)
and builds the source (the asset from its source resource, the CLI from the catalog's spec); this
module looks nothing up in the catalog and imports nothing of Dagster.
A transient error (lost connection, serialization failure, deadlock) is retried with backoff from
the partition's start: the failed attempt's staging data is discarded, so a retry can neither
duplicate nor skip rows. Any other error fails at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import logging
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import pyarrow as pa

from snapshot_platform import __version__
from snapshot_platform.catalog import SnapshotSpec
from snapshot_platform.checks import CheckRun, History, run_checks
from snapshot_platform.drift import build_reference, trailing_manifests
from snapshot_platform.sources import REGISTRY, Source, SourceError, SourceRead, Window
from snapshot_platform.sources.base import state_time
from snapshot_platform.store import fingerprints
from snapshot_platform.store import CheckOutcome, PublishResult, SnapshotStore, schema_to_json, sha256_text

log = logging.getLogger(__name__)

_LIBRARIES = ("pyarrow", "adbc-driver-postgresql", "dagster", "pandas")


def code_version(spec: SnapshotSpec) -> str:
    """Changes when what the snapshot selects changes: its query text and its key (the row order)."""
    text = "\n".join([spec.query.strip(), ",".join(spec.key)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def library_versions(libraries: tuple[str, ...] = _LIBRARIES) -> dict[str, str]:
    """Python's, ours and the installed versions of ``libraries`` (those that are installed)."""
    found = {"python": platform.python_version(), "snapshot_platform": __version__}
    for lib in libraries:
        try:
            found[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def check_columns(spec: SnapshotSpec) -> list[str]:
    drift = list(spec.checks.drift.columns) if spec.checks.drift is not None else []
    cols = list(spec.key) + list(spec.not_null) + list(spec.checks.columns) + drift
    return list(dict.fromkeys(cols))


def partition_history(store: SnapshotStore, name: str, partition_key: str, trailing: int) -> History:
    """The latest versions of the partitions before ``partition_key``, for schema and volume checks."""
    earlier = [p for p in store.partitions(name) if p < partition_key]
    history = History()
    counts: list[int] = []
    for p in reversed(earlier):
        versions = store.versions(name, p)
        if not versions:
            continue
        latest = versions[-1]
        if history.previous_schema is None:
            history.previous_partition = p
            history.previous_schema = latest.schema
        counts.append(int(latest.row_count))
        if len(counts) >= trailing:
            break
    history.trailing_row_counts = list(reversed(counts))
    return history


def _checked(batches: Iterator[pa.RecordBatch], checks: CheckRun) -> Iterator[pa.RecordBatch]:
    """``batches`` unchanged, each fed to ``checks`` on its way to the writer (which, like the
    re-read of its parts, has no batch of zero rows)."""
    for batch in batches:
        if batch.num_rows:
            checks.add(batch)
        yield batch


def _counted(batches: Iterator[pa.RecordBatch], progress: Callable[[int, int], None]) -> Iterator[pa.RecordBatch]:
    """``batches`` unchanged, telling ``progress`` the running row and byte totals after each one."""
    rows = nbytes = 0
    progress(0, 0)
    for batch in batches:
        rows += batch.num_rows
        nbytes += batch.nbytes
        progress(rows, nbytes)
        yield batch


class LateReadError(SourceError):
    """An as-of read taken too long after the partition's end to be its state (never transient)."""


def as_of_fields(spec: SnapshotSpec, read: SourceRead, window: Window, name: str, partition_key: str,
                 accept_late: bool) -> dict[str, Any]:
    """``as_of``, ``read_at``, ``late`` of a ``mode: as_of`` read; refuses a read taken more than
    ``max_lag`` after the partition's end (the engine cannot read the past) unless ``accept_late``.
    A read pinned to the partition's end by time travel (:func:`as_of_pin`) records that end as its
    time: it is never late."""
    read_at = read.read_at or state_time(read.state) or dt.datetime.now(dt.timezone.utc)
    read_at = read_at.astimezone(dt.timezone.utc)
    end = window.end.astimezone(dt.timezone.utc)
    if read_at < end:
        raise LateReadError(
            f"snapshot {name}/{partition_key} (mode: as_of): the database's time is {read_at.isoformat()}, "
            f"before the partition's end {end.isoformat()}: its state as of that end does not exist yet",
            code="as_of_not_reached")
    lag = read_at - end
    max_lag = spec.max_lag_for(window.end - window.start)
    late = lag > max_lag
    if late and not accept_late:
        raise LateReadError(
            f"snapshot {name}/{partition_key} (mode: as_of): refusing a late read: the database's time at "
            f"the read is {read_at.isoformat()}, {lag} after the partition's end {end.isoformat()}, more than "
            f"max_lag ({max_lag}); the source cannot read the past, so the rows would be today's state, "
            "not the state as of the partition's end. Accept it explicitly with --accept-late (CLI) or "
            "accept_late: true (the asset's run config) to publish it marked late: true",
            code="late_read")
    return {"as_of": end.isoformat(), "read_at": read_at.isoformat(), "late": late}


def as_of_pin(spec: SnapshotSpec, source: Source, window: Window) -> dict[str, Any]:
    """``read()``'s ``pin_at``: a ``mode: as_of`` snapshot on an engine with time travel (registry
    ``snapshot_time``) binds ``:snapshot_time`` to the partition's end, so an old partition's state
    is read as it was then (the source refuses an end still in the future)."""
    engine = REGISTRY.get(source.kind)
    if spec.mode == "as_of" and engine is not None and engine.snapshot_time:
        return {"pin_at": window.end.astimezone(dt.timezone.utc)}
    return {}


@contextlib.contextmanager
def _naming_as_of(name: str, partition_key: str) -> Iterator[None]:
    """A pinned as-of read the source refuses (its end not reached yet, or beyond time travel) as a
    :class:`LateReadError` naming the snapshot and partition."""
    try:
        yield
    except SourceError as exc:
        if exc.code in ("as_of_not_reached", "beyond_time_travel") and not isinstance(exc, LateReadError):
            raise LateReadError(f"snapshot {name}/{partition_key} (mode: as_of): {exc}", code=exc.code) from None
        raise


@dataclass(frozen=True)
class SnapshotOutcome:
    result: PublishResult
    seconds: float
    attempts: int
    checks: Mapping[str, CheckOutcome]

    @property
    def rows_per_second(self) -> float:
        return self.result.manifest.row_count / self.seconds if self.seconds > 0 else 0.0


def take_snapshot(
    spec: SnapshotSpec,
    source: Source,
    window: Window,
    store: SnapshotStore,
    *,
    name: str,
    partition_key: str,
    dagster_run_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    accept_late: bool = False,
) -> SnapshotOutcome:
    """Read ``spec``'s query over ``window`` from ``source`` and publish it as ``name``/``partition_key``.

    ``source`` is the snapshot's source (its ``max_attempts`` bounds the retries of transient errors);
    ``window`` is the partition's window, computed by the caller.
    ``progress``, if given, is called after each batch read from the source with the rows and the
    (in-memory Arrow) bytes read so far in this attempt; a retry starts again from 0. It is called
    from the store's reader thread and must be quick (the CLI draws a bar, the asset logs now and
    then); it knows nothing of terminals.
    ``accept_late``: a ``mode: as_of`` read more than ``max_lag`` after the partition's end is
    published marked ``late: true`` instead of refused.
    """
    attempts = source.spec.max_attempts
    started = time.monotonic()
    drift_reference = None
    if spec.checks.drift is not None:  # read before the source's session opens: the trailing partitions' bins
        drift_reference = build_reference(
            store, trailing_manifests(store, name, partition_key, spec.checks.drift.trailing),
            spec.checks.drift.columns)
    for attempt in range(1, attempts + 1):
        try:
            probe = {"probe": spec.change_probe.query} if spec.change_probe is not None else {}
            with _naming_as_of(name, partition_key), \
                    source.read(spec.query, window, spec.key, **probe, **as_of_pin(spec, source, window)) as read:
                fields: dict[str, Any] = {
                    "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
                    "query": spec.query,
                    "query_sha256": sha256_text(spec.query),
                    "params": read.params,
                    "key": spec.key,
                    "source": {"name": source.name, **source.describe()},
                    "source_state": read.state,
                    "dagster_run_id": dagster_run_id,
                    "code_version": code_version(spec),
                    "library_versions": library_versions(),
                }
                if spec.mode == "as_of":
                    fields.update(as_of_fields(spec, read, window, name, partition_key, accept_late))
                if read.fingerprint is not None:
                    fields["source_fingerprint"] = read.fingerprint
                history = partition_history(store, name, partition_key, spec.checks.volume.trailing)
                history.drift = drift_reference
                schema_json = schema_to_json(read.schema, read.source_types)

                # the checks see each batch as it passes to the writer (in the store's reader thread):
                # the very rows, in the very order, that the parts hold; no part is read back
                check_run = CheckRun(spec, schema_json, history)
                batches = _checked(read.batches, check_run)
                if progress is not None:
                    batches = _counted(batches, progress)
                result = store.publish(name, partition_key, read.schema, batches, fields,
                                       checker=check_run.outcomes,
                                       source_types=read.source_types, cancel=read.cancel)
            if read.fingerprint is not None and not result.created:
                # the same version again: its manifest is write-once; a moved fingerprint goes beside it
                if fingerprints.current(store, result.manifest) != read.fingerprint:
                    fingerprints.record(store, result.manifest, read.fingerprint, dagster_run_id)
            checks = result.manifest.checks
            if checks is None:
                # published before these checks existed: evaluate them now, over the verified data
                m = result.manifest
                checks = run_checks(spec, [c.as_dict() for c in m.schema],
                                    store.iter_batches(m, columns=check_columns(spec)), history)
            return SnapshotOutcome(result, time.monotonic() - started, attempt, checks)
        except SourceError as exc:
            if not exc.transient or attempt == attempts:
                raise
            delay = min(30.0, 2.0 ** (attempt - 1))
            log.warning(
                "snapshot %s/%s: transient error on attempt %d of %d, retrying from the partition's "
                "start in %.0fs: %s", name, partition_key, attempt, attempts, delay, exc,
            )
            sleep(delay)
    raise AssertionError("unreachable")
