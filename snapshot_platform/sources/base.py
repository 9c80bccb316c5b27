"""The source interface: one read-only, consistent read of a query's partition window as Arrow batches.

A source knows its engine and nothing of storage or Dagster. ``read()`` opens a session, pins one
consistent snapshot of the database, binds the window as parameters, orders the result by the
catalog key (so the same data gives the same bytes), and streams record batches with bounded memory.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from snapshot_platform.secrets import EnvRef, SecretOrLiteral
from snapshot_platform.sources.sql import quote_identifier
from snapshot_platform.sources.urls import literal_password
from snapshot_platform.sources.urls import problem as url_problem

T = TypeVar("T")


# ---------------------------------------------------------------- catalog specs


class StrictSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpecBase(StrictSpec):
    """The fields every catalog source has; each engine's spec (in its module) adds ``kind`` and its own."""

    description: str = ""
    allow_privileged_role: bool = Field(
        default=False,
        description="read even as a superuser or a role that can write (warned on every read); "
        "ignored where the engine's privileges cannot be read (sqlite, bigquery)",
    )
    statement_timeout_s: float = Field(default=600, gt=0, le=86_400)
    connect_timeout_s: float = Field(default=10, gt=0, le=600)
    max_concurrent_queries: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=10, description="attempts on transient errors")
    parallelism: int = Field(
        default=1, ge=1, le=64,
        description="connections reading one partition together, in one database snapshot, split by key "
        "ranges (PostgreSQL; the other engines refuse more than 1); at most max_concurrent_queries",
    )

    @field_validator("parallelism")
    @classmethod
    def _within_query_limit(cls, v: int, info: ValidationInfo) -> int:
        limit = info.data.get("max_concurrent_queries")
        if limit is not None and v > limit:
            raise ValueError(
                f"{v} connections per read exceed max_concurrent_queries ({limit}), the source's limit of "
                "queries at once: raise max_concurrent_queries or lower parallelism"
            )
        return v

    @property
    def reads_at_once(self) -> int:
        """Partitions read at once at most (the source's Dagster pool limit): each read holds
        ``parallelism`` of the source's ``max_concurrent_queries`` connections."""
        return max(1, self.max_concurrent_queries // self.parallelism)


def no_literal_password_in_url(v: SecretOrLiteral | None) -> SecretOrLiteral | None:
    """A ``url`` field's validator: a password in the URL (user part, ``password=``, keyword string)
    must be a secret reference, and the URL must be unambiguous."""
    literal = v.default if isinstance(v, EnvRef) else v
    if isinstance(literal, str) and literal and literal_password(literal):
        raise ValueError(
            "contains a literal password (in the URL's user part, a password= parameter or a keyword "
            "string); put the URL in an environment variable and write url: {env: NAME} (or the "
            "password alone in password: {aws_secret: NAME, key: password})"
        )
    if isinstance(literal, str) and literal:
        found = url_problem(literal)
        if found:
            raise ValueError(found)
    return v


@dataclass(frozen=True)
class Window:
    """A partition's half-open time window ``[start, end)``, in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        for t in (self.start, self.end):
            if t.tzinfo is None:
                raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("window end must be after its start")

    def as_params(self) -> dict[str, str]:
        """The bound values as recorded in manifests: ISO 8601 in UTC."""
        return {
            "partition_start": self.start.astimezone(dt.timezone.utc).isoformat(),
            "partition_end": self.end.astimezone(dt.timezone.utc).isoformat(),
        }


@dataclass
class SourceRead:
    """An open read: the result's schema, its batches (a one-shot iterator) and the engine's marker."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    params: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    # column name → the database's own type name (``inet``, ``money``, ``FLOAT``, ...), recorded in the
    # manifest's schema as ``source_type``; an engine fills in what its result metadata tells
    source_types: dict[str, str] = field(default_factory=dict)
    # ends a fetch in progress on the server (ADBC adbc_cancel, MySQL KILL QUERY, ...); called from
    # another thread than the one pulling ``batches`` when a snapshot is abandoned mid-stream, so
    # that thread leaves the driver before ``read()`` closes the connection. Must be thread-safe.
    cancel: Callable[[], None] | None = None
    # the database's own time at the read (its consistent snapshot's start), timezone-aware; None
    # when the engine cannot tell (the caller then uses the local clock)
    read_at: dt.datetime | None = None
    # the change probe's one row (column -> JSON value), read in the same consistent session before
    # the query; None when no probe was given
    fingerprint: dict[str, Any] | None = None


def fingerprint_of(source: str, columns: list[str], rows: list[Any]) -> dict[str, Any]:
    """A change probe's result as JSON: its one row, column -> value (text for what JSON lacks:
    decimals, times, bytes); a probe returning other than one row is an error."""
    if len(rows) != 1:
        raise SourceError(f"source {source}: the change probe returned {len(rows)} rows; it must return one")
    out: dict[str, Any] = {}
    for name, v in zip(columns, rows[0]):
        if v is None or isinstance(v, (bool, int, str)):
            out[name] = v
        elif isinstance(v, float):
            out[name] = v if v == v and v not in (float("inf"), float("-inf")) else repr(v)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out[name] = bytes(v).hex()
        elif isinstance(v, (dt.datetime, dt.date, dt.time)):
            out[name] = v.isoformat()
        else:
            out[name] = str(v)
    return out


def state_time(state: dict[str, Any]) -> dt.datetime | None:
    """The database's time of a read as its ``source_state`` records it (``transaction_start``, or
    the pinned ``snapshot_time``), as an aware datetime; None when it records none."""
    for k in ("transaction_start", "snapshot_time"):
        v = state.get(k)
        if isinstance(v, str) and v:
            try:
                t = dt.datetime.fromisoformat(v.strip())
            except ValueError:
                continue
            return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)
    return None


def refuse_future_pin(source: str, pin_at: dt.datetime, now: Any) -> None:
    """A pinned read of ``pin_at`` is refused while the server's time ``now`` is before it: the state
    as of that instant does not exist yet (code ``as_of_not_reached``, never transient)."""
    if isinstance(now, dt.datetime) and now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    if not isinstance(now, dt.datetime) or now < pin_at:
        raise SourceError(
            f"source {source}: the database's time is {now.isoformat() if isinstance(now, dt.datetime) else now}, "
            f"before the instant to read as of ({pin_at.astimezone(dt.timezone.utc).isoformat()}, the "
            "partition's end): its state as of that end does not exist yet", code="as_of_not_reached")


def beyond_time_travel(source: str, pin_at: dt.datetime, retention: str, detail: str) -> "SourceError":
    """The one error for a pinned read the server refuses because ``pin_at`` is older than the
    tables' time travel keeps (``retention`` names the engine's setting); never transient."""
    return SourceError(
        f"source {source}: the server cannot read the tables as of "
        f"{pin_at.astimezone(dt.timezone.utc).isoformat()} (the partition's end): it is beyond their time "
        f"travel retention ({retention}) ({detail}). That past state is gone: to snapshot this partition, "
        "run it with a query without :snapshot_time and --accept-late (it publishes today's state, marked "
        "late: true); to keep later partitions readable, raise the retention or snapshot each partition "
        "soon after its end", code="beyond_time_travel")


class SourceError(RuntimeError):
    """A read that failed. The text never holds a secret; ``transient`` says a retry may succeed."""

    def __init__(self, message: str, transient: bool = False, code: str | None = None):
        super().__init__(message)
        self.transient = transient
        self.code = code


def redact(text: str, secrets: list[str]) -> str:
    for s in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def with_secret_refresh(
    open_session: Callable[[bool], T],
    is_auth_failure: Callable[[BaseException], bool],
    refreshable: bool,
) -> T:
    """``open_session(refresh=False)``; after an authentication failure, once more with ``refresh=True``.

    A rotated secret (AWS Secrets Manager) or expired temporary credentials (Redshift IAM) make the
    first login fail; the second attempt fetches them anew. Any other failure is raised as it is.
    """
    try:
        return open_session(False)
    except Exception as exc:
        if refreshable and is_auth_failure(exc):
            return open_session(True)
        raise


def ordered(query: str, key: list[str], quote: Any = quote_identifier, select: list[str] | None = None) -> str:
    """Wrap the catalog's query so its result is in key order: deterministic bytes, same version.

    ``select`` replaces ``*`` with per-column expressions over ``snapshot_query`` (e.g. casts).
    """
    order = ", ".join(f"snapshot_query.{quote(k)}" for k in key)
    items = ", ".join(select) if select else "*"
    return f"SELECT {items} FROM (\n{query.rstrip().rstrip(';')}\n) AS snapshot_query ORDER BY {order}"


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """Drop driver metadata so that the Parquet bytes depend on the data alone."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def conform(batch: pa.RecordBatch, schema: pa.Schema, source: str, engine: str) -> pa.RecordBatch:
    """A driver's batch in the snapshot's schema (derived from the engine's result metadata)."""
    batch = pa.RecordBatch.from_arrays(list(batch.columns), schema=plain_schema(batch.schema))
    if batch.schema.equals(schema):
        return batch
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SourceError(f"source {source}: a result column does not fit its {engine} type: {exc}") from None


class Source(abc.ABC):
    """One catalog source. Subclasses implement :meth:`read` for their engine."""

    kind: str = ""
    # whether read() takes a change probe (catalog change_probe); engines without one refuse it
    supports_probe: bool = False
    # why this engine reads a partition over one connection (the catalog refuses parallelism > 1,
    # saying this); None where one partition can be read over several connections in one snapshot
    serial_reason: str | None = "it has no way to share one database snapshot between connections"

    def __init__(self, name: str, spec: Any):
        self.name = name
        self.spec = spec

    def __repr__(self) -> str:  # never the spec: it may reference secrets
        return f"{type(self).__name__}({self.name!r})"

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """kind, host, database: what a manifest records. Never a secret."""

    @abc.abstractmethod
    def read(self, query: str, window: Window, key: list[str]) -> contextlib.AbstractContextManager[SourceRead]:
        """Open a read-only, consistent read of ``query`` over ``window`` ordered by ``key``.

        Engines with ``supports_probe`` also take ``probe=`` (a change probe's query, bound like
        ``query``, run first in the same session: :attr:`SourceRead.fingerprint`); ``query`` None
        then reads the probe alone (no batches).
        Engines whose registry entry has ``snapshot_time`` also take ``pin_at=`` (an aware datetime,
        a ``mode: as_of`` partition's end): a query that uses ``:snapshot_time`` then binds that
        instant instead of the server's time, after :func:`refuse_future_pin`, and records it."""

    def fingerprint(self, probe: str, window: Window) -> dict[str, Any]:
        """The change probe's row over ``window`` now, in a session of its own."""
        if not self.supports_probe:
            raise SourceError(f"source {self.name}: a {self.kind} source does not run change probes")
        with self.read(None, window, [], probe=probe) as r:  # type: ignore[arg-type, call-arg]
            assert r.fingerprint is not None
            return r.fingerprint


# ---------------------------------------------------------------- privileged roles

_privilege_log = logging.getLogger("snapshot_platform.sources")


def refuse_privileged_role(source: Source, privileges: list[str]) -> str | None:
    """Refuse a read as a role holding ``privileges`` (those that let it write or act on the server
    despite the read-only session) unless the source says ``allow_privileged_role: true``; then warn.

    Returns what is recorded in ``source_state.privileged_role`` (None for an ordinary role).
    """
    if not privileges:
        return None
    what = ", ".join(privileges)
    if not getattr(source.spec, "allow_privileged_role", False):
        raise SourceError(
            f"source {source.name} (session setup): refusing to snapshot as a privileged role ({what}): "
            "the read-only session does not stop such a role from writing or acting on the server; "
            "connect as a role that can only SELECT (docs/sources.md), or set allow_privileged_role: true "
            "on the source",
            code="privileged_role",
        )
    _privilege_log.warning(
        "source %s: reading as a privileged role (%s) because allow_privileged_role is true; "
        "the read-only session is then the only guard: use a role that can only SELECT", source.name, what,
    )
    return what


def source_url(source: Source, value: Any, resolved: str) -> Any:
    """``urlsplit`` of a resolved URL, or a :class:`SourceError` that quotes nothing of it."""
    from snapshot_platform.sources.urls import UrlError, split_url

    try:
        return split_url(resolved)
    except UrlError as exc:
        where = value.describe() if hasattr(value, "describe") else "the catalog"
        raise SourceError(f"source {source.name}: field 'url' (from {where}) {exc}") from None
