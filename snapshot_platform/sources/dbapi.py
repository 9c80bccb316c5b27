"""The one read skeleton of the engines reached through a DB-API driver (postgres, mysql, redshift,
snowflake); each engine implements only its hooks.

A read, in order:

1. connect (:meth:`DbapiSource._connect`), once more with fresh secrets after a failed login when a
   secret may have been rotated (:func:`~snapshot_platform.sources.base.with_secret_refresh`); a
   missing secret or a refused connection fails as ``source NAME (connect): ...``;
2. the engine's session setup, snapshot marker and query (:meth:`DbapiSource._open`), which moves
   the :class:`Stage` along so that an error names where it happened
   (``session setup``, ``snapshot marker``, ``query``);
3. the batches: the driver's chunks (rows, or Arrow batches) pulled one at a time, a driver error
   there failing as ``source NAME (streaming rows): ...``;
4. cleanup, whatever happened: the stream (cursor) is closed before the connection
   (:meth:`DbapiSource._release`).

Driver errors become :class:`~snapshot_platform.sources.base.SourceError` through the engine's
:meth:`DbapiSource._error` (its codes, hints, what is transient), with secrets redacted.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa

from snapshot_platform.secrets import SecretMissingError, aws_refs
from snapshot_platform.sources.base import Source, SourceError, SourceRead, Window, state_time, with_secret_refresh

Converter = Callable[[Any], Any]


@dataclass
class Stage:
    """Where a read is; an error raised there is reported with it."""

    name: str = "session setup"


@dataclass
class Opened:
    """What an engine's :meth:`DbapiSource._open` hands back: the result and how its chunks come."""

    schema: pa.Schema
    chunks: Iterator[Any]  # pulled lazily: lists of rows, or Arrow batches
    to_batch: Callable[[Any], pa.RecordBatch]  # one chunk in the snapshot's schema
    state: dict[str, Any]
    source_types: dict[str, str] = field(default_factory=dict)
    cancel: Callable[[], None] | None = None  # thread-safe: ends the fetch in progress on the server
    fingerprint: dict[str, Any] | None = None  # the change probe's row (engines with supports_probe)


def fetched(cur: Any, rows: int) -> Iterator[Sequence[Any]]:
    """``cur.fetchmany(rows)`` until the result is exhausted."""
    while True:
        got = cur.fetchmany(rows)
        if not got:
            return
        yield got


class DbapiSource(Source):
    """A source whose engine is reached through a DB-API connection and cursor."""

    # ------------------------------------------------------------ hooks

    @abc.abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes: mapped by :meth:`_error` wherever they are raised."""

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        """What a failed connection raises (default: the driver's errors)."""
        return self._driver_errors()

    def _stream_errors(self) -> tuple[type[BaseException], ...]:
        """What a failed fetch raises (default: the driver's errors)."""
        return self._driver_errors()

    @abc.abstractmethod
    def _connect(self, refresh: bool) -> Any:
        """A new connection; ``refresh``: resolve secrets anew (after a failed login)."""

    @abc.abstractmethod
    def _is_auth_failure(self, exc: BaseException) -> bool:
        """Whether a connection failed because the login was refused."""

    def _secret_refs(self) -> list[Any]:
        """The spec's values a rotation may change (fetched once more after a refused login)."""
        return []

    def _refreshable(self) -> bool:
        return bool(aws_refs(*self._secret_refs()))

    @abc.abstractmethod
    def _error(self, exc: BaseException, stage: str) -> SourceError:
        """A driver error as a SourceError: ``source NAME (stage): hint: text [code]``, redacted."""

    def _connect_error(self, exc: BaseException) -> BaseException:
        return self._error(exc, "connect")

    def _failure(self, exc: BaseException, stage: str) -> BaseException:
        """What a driver error during the read becomes (default: :meth:`_error`)."""
        return self._error(exc, stage)

    def _cursor(self, conn: Any) -> Any:
        return conn.cursor()

    @abc.abstractmethod
    def _open(self, conn: Any, cur: Any, query: str, window: Window, key: list[str], stage: Stage) -> Opened:
        """Session setup, snapshot marker and the ordered query; ``stage.name`` follows along."""

    def _release(self, conn: Any, cur: Any) -> None:
        """Cleanup: the stream before the connection, each step whatever the one before did."""
        if cur is not None:
            with contextlib.suppress(Exception):
                cur.close()
        with contextlib.suppress(Exception):
            conn.close()

    # ------------------------------------------------------------ shared row batches

    def _unfit_errors(self) -> tuple[type[BaseException], ...]:
        return (ValueError, TypeError, OverflowError)

    def _unfit(self, f: pa.Field, db_type: str, values: list[Any], exc: BaseException) -> str:
        """Why a value cannot be kept exactly, and what to do."""
        return f"source {self.name}: column {f.name!r} ({db_type}) cannot be read as {f.type} exactly ({exc})"

    def _batch(
        self, rows: Sequence[Sequence[Any]], schema: pa.Schema, converters: list[Converter | None],
        types: dict[str, str],
    ) -> pa.RecordBatch:
        """Rows (tuples) as a record batch of ``schema``: each column converted, then checked by Arrow;
        a value that does not fit fails naming its column (:meth:`_unfit`)."""
        arrays = []
        for i, (f, conv) in enumerate(zip(schema, converters)):
            values = [r[i] for r in rows]
            try:
                if conv is not None:
                    values = [None if v is None else conv(v) for v in values]
                arrays.append(pa.array(values, type=f.type))
            except self._unfit_errors() as exc:
                raise SourceError(self._unfit(f, types.get(f.name, "?"), values, exc)) from None
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # ------------------------------------------------------------ the read

    def _connection(self) -> Any:
        try:
            return with_secret_refresh(self._connect, self._is_auth_failure, refreshable=self._refreshable())
        except SecretMissingError as exc:
            raise SourceError(f"source {self.name} (connect): {exc}") from None
        except self._connect_errors() as exc:
            raise self._connect_error(exc) from None

    def _batches(self, opened: Opened) -> Iterator[pa.RecordBatch]:
        chunks = iter(opened.chunks)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except self._stream_errors() as exc:
                raise self._failure(exc, "streaming rows") from None
            yield opened.to_batch(chunk)

    @contextlib.contextmanager
    def read(self, query: str | None, window: Window, key: list[str], probe: str | None = None,
             pin_at: dt.datetime | None = None) -> Iterator[SourceRead]:
        if probe is not None and not self.supports_probe:
            raise SourceError(f"source {self.name}: a {self.kind} source does not run change probes")
        conn = self._connection()
        cur = None
        stage = Stage()
        try:
            cur = self._cursor(conn)
            extra: dict[str, Any] = {"probe": probe} if self.supports_probe else {}
            if pin_at is not None:  # only engines with snapshot_time are given one; their _open takes it
                extra["pin_at"] = pin_at
            opened = self._open(conn, cur, query, window, key, stage, **extra)  # type: ignore[arg-type]
            yield SourceRead(schema=opened.schema, batches=self._batches(opened), params=window.as_params(),
                             state=opened.state, source_types=opened.source_types, cancel=opened.cancel,
                             read_at=state_time(opened.state), fingerprint=opened.fingerprint)
        except self._driver_errors() as exc:
            raise self._failure(exc, stage.name) from None
        finally:
            self._release(conn, cur)
