"""PostgreSQL, read through ADBC's libpq driver (binary COPY decoded to Arrow in C).

One session per read:

1. session settings, each bound as a parameter through ``set_config``: ``statement_timeout``,
   ``idle_in_transaction_session_timeout``, ``TimeZone = UTC``, ``default_transaction_read_only``;
2. the window bounds: the rows travel through ``COPY``, which takes no bind parameters, so the
   query's ``:partition_start`` and ``:partition_end`` become typed literals
   (``TIMESTAMPTZ '2024-03-10 00:00:00.000000+00'``) that the program renders itself from the
   window's own datetimes (:func:`timestamptz_literal`: digits only, checked), never from text of
   the catalog or the user; the catalog's values never enter the SQL text. With literal bounds the
   planner sees how many rows the window holds and picks, e.g., the key's index scan over a sort
   (bounds read through ``current_setting()`` hid that: a full scan and a sort, slower);
3. ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``: every statement after it sees one snapshot;
   its ``pg_current_snapshot()`` and WAL LSN are recorded as ``source_state``;
4. the ordered query, streamed as Arrow record batches (ADBC's reader is pull-based, so memory is
   bounded by the batch size whatever the result's size).

``NUMERIC(p,s)`` becomes ``decimal128(p,s)`` (``decimal256`` above 38 digits); an unconstrained
``NUMERIC`` has no fixed scale, so it is kept exactly as text: cast it in the query to get decimals.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
from pydantic import Field, field_validator

from snapshot_platform.secrets import SecretOrLiteral, SecretRef, resolve
from snapshot_platform.sources.base import (
    SourceError,
    SourceSpecBase,
    Window,
    fingerprint_of,
    no_literal_password_in_url,
    ordered,
    redact,
    refuse_privileged_role,
    source_url,
)
from snapshot_platform.sources.dbapi import DbapiSource, Opened, Stage
from snapshot_platform.sources.postgres_types import (
    apply_plan,
    catalog_facts,
    require_column_types,
    transfer_plan,
)
from snapshot_platform.sources.sql import rewrite
from snapshot_platform.sources.sqlstate import AUTH_SQLSTATES, MESSAGES, is_transient, sqlstate_error
from snapshot_platform.sources.urls import secret_fragments

_MESSAGES = {**MESSAGES, "25P03": "idle-in-transaction timeout"}


class PostgresSourceSpec(SourceSpecBase):
    kind: Literal["postgres"]
    url: SecretOrLiteral
    password: SecretRef | None = Field(
        default=None, description="overrides the URL's password: {env: NAME} or {aws_secret: NAME, key: password}"
    )
    max_replica_lag_s: float | None = Field(
        default=None, gt=0, description="refuse to read from a replica whose replay is further behind"
    )

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral) -> SecretOrLiteral:
        return no_literal_password_in_url(v)


# errors that reach us without a SQLSTATE (ADBC raises server errors met while streaming as Arrow
# errors carrying only libpq's text): the server's message names the condition
_TEXT_SQLSTATES = (
    ("canceling statement due to statement timeout", "57014"),
    ("in a read-only transaction", "25006"),
    ("cannot set transaction read-write mode", "25001"),
    ("read-write mode must be set before any query", "25001"),
    ("terminating connection due to administrator command", "57P01"),
    ("conflict with recovery", "40001"),
    ("could not serialize access", "40001"),
    ("deadlock detected", "40P01"),
    ("permission denied", "42501"),
    ("password authentication failed", "28P01"),
    ("server closed the connection unexpectedly", "08006"),
)


_USER_CANCEL = "the query was cancelled (Ctrl-C, or pg_cancel_backend on the server)"


def _cancelled_by_user(exc: BaseException) -> bool:
    """The server cancelled the query on a client's request: Ctrl-C, whichever thread sees it.

    During a blocking call in the main thread, ADBC's own SIGINT handler takes Ctrl-C from Python
    and cancels the statement on the server instead; the error (met there or by the thread reading
    the rows) is then the user's interrupt, raised as KeyboardInterrupt. (When the store cancels an
    abandoned read, the reader thread's error is discarded.)
    """
    return "canceling statement due to user request" in str(exc)


_BATCH_BYTES = 4 * 1024 * 1024

_TIMESTAMPTZ = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00")


def timestamptz_literal(t: dt.datetime) -> str:
    """``TIMESTAMPTZ '2024-03-10 00:00:00.000000+00'``: one of the program's own (timezone-aware)
    datetimes as a typed SQL literal, in UTC, for where a protocol takes no bind parameters (COPY).

    Only a ``datetime`` is accepted, never text, and the rendered value is checked to be digits in
    this one form before it is returned, so nothing but a timestamp can reach the SQL.
    """
    if not isinstance(t, dt.datetime) or t.tzinfo is None:
        raise TypeError(f"a window bound must be a timezone-aware datetime, not {type(t).__name__}")
    u = t.astimezone(dt.timezone.utc)
    text = (f"{u.year:04d}-{u.month:02d}-{u.day:02d} {u.hour:02d}:{u.minute:02d}:{u.second:02d}"
            f".{u.microsecond:06d}+00")
    if not _TIMESTAMPTZ.fullmatch(text):
        raise ValueError("a window bound did not render as a timestamp literal")
    return f"TIMESTAMPTZ '{text}'"


def window_sql(text: str, window: Window) -> str:
    """``text`` (the catalog's query or probe) with ``:partition_start``/``:partition_end`` replaced
    by the window's bounds as typed literals (:func:`timestamptz_literal`); a trailing ``;`` dropped."""
    bounds = {"partition_start": timestamptz_literal(window.start),
              "partition_end": timestamptz_literal(window.end)}

    def spell(name: str, _i: int) -> str:
        if name not in bounds:  # the catalog refuses other parameters; never spell one
            raise ValueError(f"unknown query parameter :{name}")
        return bounds[name]

    return rewrite(text.rstrip().rstrip(";"), spell)[0]


def _sqlstate_from_text(text: str) -> str | None:
    m = re.search(r"SQLSTATE[: ]+([0-9A-Z]{5})", text)
    if m:
        return m.group(1)
    lowered = text.lower()
    for needle, state in _TEXT_SQLSTATES:
        if needle in lowered:
            return state
    return None


class PostgresSource(DbapiSource):
    kind = "postgres"
    supports_probe = True
    serial_reason = None  # parallelism: K reads over K connections in one snapshot (postgres_parallel.py)
    spec: PostgresSourceSpec

    def read(self, query: str | None, window: Window, key: list[str], probe: str | None = None) -> Any:
        if query is not None and self.spec.parallelism > 1:
            from snapshot_platform.sources.postgres_parallel import parallel_read

            return parallel_read(self, query, window, key, probe)
        return super().read(query, window, key, probe)

    def _url(self, refresh: bool = False) -> str:
        """The URL, with ``password:`` (a secret reference) put in when the spec gives one."""
        url = resolve(self.spec.url, refresh=refresh)
        parts = source_url(self, self.spec.url, url)  # refuses an ambiguous URL, quoting nothing of it
        if self.spec.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:{quote(resolve(self.spec.password, refresh=refresh), safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def describe(self) -> dict[str, Any]:
        parts = urlsplit(self._url())
        return {
            "kind": "postgres",
            "host": parts.hostname,
            "port": parts.port or 5432,
            "database": parts.path.lstrip("/") or None,
        }

    def _secrets(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(Exception):
            found += secret_fragments(resolve(self.spec.url))
        with contextlib.suppress(Exception):
            found += secret_fragments(self._url())
        return found

    def _privileged_role(self, cur: Any) -> str | None:
        """Refuse a superuser, or a member of a role that writes or acts on the server whatever the
        session's read-only mode (unless allow_privileged_role); what source_state records."""
        cur.execute(
            "SELECT r.rolsuper, (SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_roles b"
            "  WHERE b.rolname IN ('pg_write_all_data', 'pg_signal_backend', 'pg_write_server_files',"
            "  'pg_execute_server_program') AND pg_has_role(session_user, b.oid, 'MEMBER'))"
            " FROM pg_roles r WHERE r.rolname = session_user"
        )
        row = cur.fetchone()
        superuser, member_of = (row or (False, None))
        found = ["superuser"] if superuser else [f"member of {r}" for r in (member_of or "").split(",") if r]
        return refuse_privileged_role(self, found)

    def _connect_url(self, refresh: bool = False) -> str:
        parts = urlsplit(self._url(refresh))
        query = dict(parse_qsl(parts.query))
        query.setdefault("connect_timeout", str(max(1, int(self.spec.connect_timeout_s))))
        query.setdefault("application_name", "snapshot_platform")
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _error(self, exc: BaseException, stage: str) -> SourceError:
        sqlstate = getattr(exc, "sqlstate", None) or _sqlstate_from_text(str(exc))
        text = redact(str(exc).strip(), self._secrets())
        return sqlstate_error(self.name, stage, text, sqlstate, _MESSAGES, self.spec.statement_timeout_s,
                              is_transient(sqlstate))

    # ------------------------------------------------------------ the read (skeleton: sources/dbapi.py)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import adbc_driver_manager

        return (adbc_driver_manager.Error,)

    def _stream_errors(self) -> tuple[type[BaseException], ...]:
        # ADBC reports a server error met while streaming as an Arrow error
        return (*self._driver_errors(), pa.ArrowException, OSError)

    def _failure(self, exc: BaseException, stage: str) -> BaseException:
        if _cancelled_by_user(exc):
            return KeyboardInterrupt(f"source {self.name}: {_USER_CANCEL}")
        return self._error(exc, stage)

    def _connect(self, refresh: bool) -> Any:
        from snapshot_platform.sources import adbc_client

        return adbc_client.connect(self._connect_url(refresh))

    def _is_auth_failure(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in AUTH_SQLSTATES or "authentication failed" in str(exc)

    def _secret_refs(self) -> list[Any]:
        return [self.spec.url, self.spec.password]

    def _open(self, conn: Any, cur: Any, query: str | None, window: Window, key: list[str], stage: Stage,
              probe: str | None = None) -> Opened:
        privileged = self._privileged_role(cur)
        timeout_ms = str(int(self.spec.statement_timeout_s * 1000))
        cur.execute(
            "SELECT set_config('statement_timeout', $1, false),"
            " set_config('idle_in_transaction_session_timeout', $2, false),"
            " set_config('TimeZone', 'UTC', false),"
            " set_config('default_transaction_read_only', 'on', false)",
            parameters=(timeout_ms, timeout_ms),
        )
        cur.fetchall()
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._began(cur)
        stage.name = "snapshot marker"
        state = self._marker(cur)
        if privileged:
            state["privileged_role"] = privileged
        fingerprint = None
        if probe is not None:  # in the same snapshot, before the query
            stage.name = "change probe"
            cur.execute(window_sql(probe, window))
            table = cur.fetch_arrow_table()
            fingerprint = fingerprint_of(self.name, table.column_names,
                                         [tuple(r.values()) for r in table.to_pylist()])
        if query is None:
            return Opened(schema=pa.schema([]), chunks=iter(()), to_batch=lambda b: b, state=state,
                          fingerprint=fingerprint)
        stage.name = "query"
        bound = window_sql(query, window)
        # the result's columns and types first (planning only), to choose each column's transfer
        cur.execute(f"SELECT * FROM (\n{bound}\n) AS snapshot_query LIMIT 0")
        probe = cur.fetch_arrow_table().schema
        require_column_types(probe, self.name)
        plan = transfer_plan(probe, **catalog_facts(cur, probe))
        # batches of about 4 MB (the driver's default: 16 MB): a few are in flight at once (decoded,
        # queued, written), so smaller ones lower the peak memory; the bytes written do not depend on
        # the batch sizes (row groups and parts are cut by rows and keys)
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(_BATCH_BYTES)})
        cur.execute(ordered(self._part(cur, bound, key, plan), key, select=plan.select))
        return Opened(
            schema=plan.schema,
            chunks=cur.fetch_record_batch(),  # pull-based: memory bounded by the batch size
            to_batch=lambda b: apply_plan(plan, b, self.name),
            state=state,
            source_types=plan.source_types,
            cancel=cur.adbc_cancel,  # thread-safe by ADBC's contract
            fingerprint=fingerprint,
        )

    # hooks of a parallel read (sources/postgres_parallel.py); a serial read does nothing in them

    def _began(self, cur: Any) -> None:
        """Right after BEGIN, before any query of the transaction (a parallel read's other
        connections import the first one's snapshot here)."""

    def _part(self, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        """The rows this connection streams: all of ``bound`` (a parallel read's connections: one
        key range each, in the same snapshot)."""
        return bound

    def _marker(self, cur: Any) -> dict[str, Any]:
        """The snapshot's marker as ``source_state``; refuses a replica further behind than allowed."""
        cur.execute(
            "SELECT pg_current_snapshot()::text, pg_is_in_recovery(),"
            " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
            "  ELSE pg_current_wal_lsn() END)::text, now()::text,"
            " current_setting('server_version'),"
            # replay lag: zero when everything received is replayed, else the age of the last replay
            " CASE WHEN NOT pg_is_in_recovery() THEN NULL"
            "  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0"
            "  ELSE EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8 END"
        )
        snap, in_recovery, lsn, started, server_version, lag = cur.fetchone()
        if in_recovery and self.spec.max_replica_lag_s is not None:
            if lag is None or lag > self.spec.max_replica_lag_s:
                behind = "an unknown time (nothing replayed yet)" if lag is None else f"{lag:.1f}s"
                raise SourceError(
                    f"source {self.name}: the replica is {behind} behind its primary, more than "
                    f"max_replica_lag_s ({self.spec.max_replica_lag_s:g}s); not snapshotting stale data",
                    code="replica_lag",
                )
        state = {
            "engine": "postgres",
            "server_version": server_version,
            "snapshot": snap,
            "xmin": int(snap.split(":")[0]),
            "wal_lsn": lsn,
            "in_recovery": bool(in_recovery),
            "transaction_start": started,
        }
        if in_recovery:
            state["replica_lag_s"] = lag
        return state
