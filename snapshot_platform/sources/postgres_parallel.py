"""PostgreSQL: one partition read over several connections inside one database snapshot
(the catalog's ``parallelism: K``), as ``pg_dump -j`` does.

1. The first connection (the coordinator) opens the read exactly like a serial one
   (:mod:`snapshot_platform.sources.postgres`: session settings, ``REPEATABLE READ READ ONLY``,
   ``source_state``, the change probe, the result's column types). Its ``source_state`` is the
   snapshot's marker, recorded once.
2. In that transaction it finds the split points: ``percentile_disc`` of the key's first column over
   a 1% sample of the query's rows (every row when the sample is small), which also estimates the
   row count: a partition gets one connection per :data:`MIN_ROWS_PER_CONNECTION` rows, at most K.
   Then ``pg_export_snapshot()``.
3. Each other connection (a worker, in a thread of its own) opens the same session, runs
   ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '<id>'`` (the id is
   the server's, checked to be hex digits and dashes), and checks that ``pg_current_snapshot()`` is
   the coordinator's. The coordinator waits until every worker has imported the snapshot before its
   own query starts, and keeps its transaction open until the read ends.
4. Connection *i* streams the rows whose first key column lies in ``[split(i), split(i+1))``, ordered
   by the whole key; the last range also holds the NULLs (``ORDER BY`` puts them last). The
   coordinator reads the first range. The ranges concatenated in order are exactly the serial
   read's rows in the serial read's order, so the Parquet bytes and the version id do not depend
   on K (the writer cuts row groups at fixed row counts, whatever the batch sizes).
5. The writer takes the coordinator's rows as they come. A worker whose range is not being written
   yet sets its rows aside in an unlinked temporary file (Arrow IPC under ``$TMPDIR``); once the
   writer reaches its range it reads that file back, then takes the worker's further rows through a
   queue of :data:`QUEUE_DEPTH` batches (the worker blocks when the writer is slower). Memory stays
   flat whatever the partition's size; the temporary files hold at most the ranges read ahead.

Split values come from the data. COPY takes no bind parameters, so they are rendered as typed
literals by :func:`split_literal` only for the types the program parses itself (integers, dates,
timestamps) and checked to be digits in one fixed form; a key whose first column has another type
(text, numeric, uuid, ...) is read over one connection, with a log line saying why.

A failing connection cancels the others' queries; every connection's stream is closed before the
connection, in the thread that reads it, and the read returns only once every worker has stopped.
A transient error fails the whole read, which the caller retries from the partition's start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import queue
import re
import tempfile
import threading
from typing import Any, Iterator

import pyarrow as pa

from snapshot_platform.sources.base import SourceError, SourceRead, Window
from snapshot_platform.sources.dbapi import DbapiSource
from snapshot_platform.sources.postgres import PostgresSource, timestamptz_literal
from snapshot_platform.sources.sql import quote_identifier

log = logging.getLogger(__name__)

SAMPLE_FRACTION = 0.01  # of the query's rows, for the split points and the row estimate
EXACT_BELOW = 1_000  # sampled rows under which the split points are computed over every row
GRID = 256  # percentiles computed (every 1/GRID); each split point is the nearest of them
MIN_ROWS_PER_CONNECTION = 50_000  # a smaller partition is read over fewer connections
QUEUE_DEPTH = 2  # batches a worker hands over ahead of the writer, once the writer reads its range
_POLL_S = 0.2

_SNAPSHOT_ID = re.compile(r"[0-9A-F]{1,16}(-[0-9A-F]{1,16}){1,3}")
# the first key column's types whose values the program renders as literals (PostgreSQL type names)
_LITERAL_FORMS = {
    "int2": re.compile(r"-?\d{1,5}"),
    "int4": re.compile(r"-?\d{1,10}"),
    "int8": re.compile(r"-?\d{1,19}"),
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "timestamp": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}"),
}
SPLITTABLE_TYPES = (*_LITERAL_FORMS, "timestamptz")


def _datetime_text(t: dt.datetime) -> str:
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"
            f".{t.microsecond:06d}")


def split_literal(value: Any, pg_type: str) -> str:
    """A split value read from the database (an ``int``, ``date`` or ``datetime`` the driver made)
    as a typed SQL literal of the key column's own type, e.g. ``int8 '1250000'``,
    ``TIMESTAMPTZ '2024-03-10 00:00:00.000000+00'``. Nothing but those Python types is accepted,
    and the rendered text is checked against the type's one form before it is returned."""
    if pg_type in ("int2", "int4", "int8"):
        if type(value) is not int:
            raise TypeError(f"a {pg_type} split value must be an int, not {type(value).__name__}")
        text = str(value)
    elif pg_type == "date":
        if type(value) is not dt.date:
            raise TypeError(f"a date split value must be a date, not {type(value).__name__}")
        text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    elif pg_type == "timestamp":
        if type(value) is not dt.datetime or value.tzinfo is not None:
            raise TypeError("a timestamp split value must be a naive datetime")
        text = _datetime_text(value)
    elif pg_type == "timestamptz":
        if type(value) is not dt.datetime:
            raise TypeError("a timestamptz split value must be a datetime")
        return timestamptz_literal(value)  # the window bounds' own renderer (checked the same way)
    else:
        raise TypeError(f"no literal form for a {pg_type} split value")
    if not _LITERAL_FORMS[pg_type].fullmatch(text):
        raise ValueError(f"a {pg_type} split value did not render in its literal form")
    return f"{pg_type.upper()} '{text}'"


def range_query(bound: str, column: str, lo: str | None, hi: str | None) -> str:
    """``bound`` restricted to the rows whose ``column`` is in ``[lo, hi)`` (literals from
    :func:`split_literal`; None: unbounded); the last range (``hi`` None) also holds the NULLs."""
    col = f"snapshot_range.{quote_identifier(column)}"
    conds = ([f"{col} >= {lo}"] if lo is not None else []) + ([f"{col} < {hi}"] if hi is not None else [])
    where = " AND ".join(conds)
    if hi is None:
        where = f"({where} OR {col} IS NULL)"
    return f"SELECT * FROM (\n{bound}\n) AS snapshot_range WHERE {where}"


def snapshot_id(value: Any) -> str:
    """The id ``pg_export_snapshot()`` returned, checked to be one (hex digits and dashes) before it
    is put into ``SET TRANSACTION SNAPSHOT '...'`` (a utility statement takes no parameters)."""
    if not isinstance(value, str) or not _SNAPSHOT_ID.fullmatch(value):
        raise SourceError("pg_export_snapshot() returned something else than a snapshot id")
    return value


def split_points(cur: Any, bound: str, column: str, wanted: int) -> tuple[int, list[Any]]:
    """The row count (estimated from the sample) and the split points of up to ``wanted`` connections,
    one scan of the query: ``percentile_disc`` over a sample of its rows (all of a small one)."""
    grid = "{" + ",".join(repr(j / GRID) for j in range(1, GRID)) + "}"
    sql = (f"SELECT count(*), percentile_disc($1::float8[]) WITHIN GROUP"
           f" (ORDER BY snapshot_split.{quote_identifier(column)})"
           f" FROM (\n{bound}\n) AS snapshot_split WHERE random() < $2::float8")
    fraction = SAMPLE_FRACTION
    cur.execute(sql, parameters=(grid, repr(fraction)))
    sampled, points = cur.fetchone()
    if sampled < EXACT_BELOW:
        fraction = 1.0  # random() < 1 always: every row
        cur.execute(sql, parameters=(grid, repr(fraction)))
        sampled, points = cur.fetchone()
    rows = round(sampled / fraction)
    n = max(1, min(wanted, rows // MIN_ROWS_PER_CONNECTION))
    if n < 2 or not points:
        return rows, []
    return rows, [points[round(GRID * i / n) - 1] for i in range(1, n)]


_DONE = object()


class _Spill:
    """A worker's rows set aside until the writer reaches its range: an unlinked temporary file
    (gone with the process, whatever happens) holding an Arrow IPC stream."""

    def __init__(self, schema: pa.Schema):
        self._file = tempfile.TemporaryFile(prefix="snapshot-platform-range-")
        self._writer: Any = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), schema)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def finish(self) -> None:
        self._writer.close()
        self._file.flush()

    def batches(self) -> Iterator[pa.RecordBatch]:
        self._file.seek(0)
        with pa.ipc.open_stream(pa.PythonFile(self._file, mode="r")) as reader:
            yield from reader

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()


class _Coordinator(PostgresSource):
    """The first connection: a serial read's session, whose query the team restricts to the first
    range after finding the split points and starting the workers."""

    read = DbapiSource.read  # type: ignore[assignment]  # one connection: its own

    def __init__(self, source: PostgresSource, team: "_Team"):
        super().__init__(source.name, source.spec)
        self.team = team

    def _part(self, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        return self.team.start(cur, bound, key, plan)

    def _release(self, conn: Any, cur: Any) -> None:
        self.team.forget_cursor(self)
        super()._release(conn, cur)


class _Worker(PostgresSource):
    """Connection *i* > 0: imports the coordinator's snapshot and streams one key range, in a thread."""

    read = DbapiSource.read  # type: ignore[assignment]

    def __init__(self, source: PostgresSource, team: "_Team", index: int, lo: str | None, hi: str | None):
        super().__init__(source.name, source.spec)
        self.team, self.index, self.lo, self.hi = team, index, lo, hi
        self.imported = threading.Event()  # set once the snapshot is imported, or the worker has failed
        self.reached = threading.Event()  # the writer reads this range now: hand rows over, stop spilling
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.thread = threading.Thread(target=self._run, name=f"snapshot-range-{index}", daemon=True)

    # ---------------------------------------------------------------- the session (hooks of _open)

    def _privileged_role(self, cur: Any) -> str | None:
        return None  # the coordinator checked this very role (the same URL) and recorded it

    def _began(self, cur: Any) -> None:
        self.team.remember_cursor(self, cur)
        cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot_id(self.team.snapshot_id)}'")

    def _marker(self, cur: Any) -> dict[str, Any]:
        state = super()._marker(cur)
        if state["snapshot"] != self.team.snapshot:
            raise SourceError(
                f"source {self.name}: connection {self.index + 1} of a parallel read sees snapshot "
                f"{state['snapshot']}, not the coordinator's {self.team.snapshot}")
        self.imported.set()
        return state

    def _part(self, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        if not plan.schema.equals(self.team.schema):
            raise SourceError(f"source {self.name}: connection {self.index + 1} of a parallel read got "
                              "another result schema than the first")
        return range_query(bound, self.team.column, self.lo, self.hi)

    def _release(self, conn: Any, cur: Any) -> None:
        self.team.forget_cursor(self)
        super()._release(conn, cur)

    # ---------------------------------------------------------------- the thread

    def _put(self, item: Any) -> bool:
        while not self.team.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _hand_over(self, spill: _Spill) -> bool:
        """The rows set aside, finished, into the queue: before any row read after them."""
        try:
            spill.finish()
        except OSError as exc:
            spill.close()
            raise self.team.spill_error(exc) from None
        if self._put(spill):
            return True
        spill.close()
        return False

    def _set_aside(self, spill: _Spill | None, batch: pa.RecordBatch) -> _Spill:
        try:
            spill = spill if spill is not None else _Spill(batch.schema)
            spill.write(batch)
        except OSError as exc:
            if spill is not None:
                spill.close()
            raise self.team.spill_error(exc) from None
        return spill

    def _run(self) -> None:
        spill: _Spill | None = None
        try:
            with self.read(self.team.query, self.team.window, self.team.key) as r:
                batches = r.batches
                try:
                    for batch in batches:
                        if self.team.stop.is_set():
                            return
                        if not self.reached.is_set():
                            spill = self._set_aside(spill, batch)
                            continue
                        if spill is not None:  # the writer got here: the rows set aside go first
                            spill, held = None, spill
                            if not self._hand_over(held):
                                return
                        if not self._put(batch):
                            return
                finally:
                    batches.close()  # in this thread, before the connection closes
            if spill is not None:
                spill, held = None, spill
                if not self._hand_over(held):
                    return
            self._put(_DONE)
        except BaseException as exc:  # recorded; the writer raises the first failure of the read
            self.team.fail(exc)
        finally:
            if spill is not None:
                spill.close()
            self.imported.set()

    def rows(self) -> Iterator[pa.RecordBatch]:
        """This range's rows, in order, for the writer (who has read every range before it)."""
        self.reached.set()
        while True:
            try:
                item = self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                self.team.raise_failure()
                if self.team.stop.is_set():
                    raise SourceError(f"source {self.name}: the parallel read was stopped") from None
                if not self.thread.is_alive() and self.queue.empty():
                    raise SourceError(f"source {self.name}: connection {self.index + 1} of a parallel read "
                                      "ended without handing over its rows") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Spill):
                try:
                    yield from item.batches()
                finally:
                    item.close()
                continue
            self.team.raise_failure()
            yield item

    def drop(self) -> None:
        """Close the temporary files nobody will read (after the thread has ended)."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Spill):
                item.close()


class _Team:
    """The connections of one parallel read, their shared state and their cleanup."""

    def __init__(self, source: PostgresSource, query: str, window: Window, key: list[str]):
        self.source, self.query, self.window, self.key = source, query, window, key
        self.coordinator = _Coordinator(source, self)
        self.workers: list[_Worker] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.snapshot_id = ""
        self.snapshot = ""
        self.schema: pa.Schema | None = None
        self.column = ""
        self.note: dict[str, Any] = {"connections": 1}
        self._lock = threading.Lock()
        self._cursors: dict[int, Any] = {}  # id(connection's source) -> its open cursor, for cancels

    # ---------------------------------------------------------------- cursors and cancels

    def remember_cursor(self, who: PostgresSource, cur: Any) -> None:
        with self._lock:
            self._cursors[id(who)] = cur

    def forget_cursor(self, who: PostgresSource) -> None:
        with self._lock:  # never cancelled after this: the cursor is about to be closed
            self._cursors.pop(id(who), None)

    def cancel(self) -> None:
        """End every query of the read on the server (thread-safe; never on a closed cursor)."""
        self.stop.set()
        with self._lock:
            for cur in self._cursors.values():
                with contextlib.suppress(Exception):
                    cur.adbc_cancel()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            first = self.error is None and not self.stop.is_set()
            if first:
                self.error = exc
        if first:
            self.cancel()

    def raise_failure(self) -> None:
        """Raise the first failure of a worker, if one failed."""
        if self.error is not None:
            raise self.error

    def spill_error(self, exc: OSError) -> SourceError:
        return SourceError(
            f"source {self.source.name}: a parallel read could not set rows aside in the temporary folder "
            f"{tempfile.gettempdir()} ({exc.strerror or exc}): free space there ($TMPDIR) or lower "
            "parallelism")

    # ---------------------------------------------------------------- the coordinator's hook

    def start(self, cur: Any, bound: str, key: list[str], plan: Any) -> str:
        """In the coordinator's transaction: split points, snapshot export, the workers started and
        their snapshot imported; the coordinator's own (first) range. ``bound`` whole when the read
        stays on one connection, with the reason logged."""
        self.remember_cursor(self.coordinator, cur)
        wanted = self.source.spec.parallelism
        column = key[0] if key else ""
        pg_type = plan.source_types.get(column, "")
        if column not in plan.schema.names:
            return self._serial(bound, wanted, "the key's first column is not a column of the result")
        if pg_type not in SPLITTABLE_TYPES:
            return self._serial(
                bound, wanted, f"the key's first column {column!r} is {pg_type or 'of an unknown type'}; "
                f"split points are rendered into the COPY only for {', '.join(SPLITTABLE_TYPES)}")
        try:
            rows, splits = split_points(cur, bound, column, wanted)
            literals = list(dict.fromkeys(split_literal(v, pg_type) for v in splits if v is not None))
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. a date before year 1: no Python date
            return self._serial(bound, wanted,
                                f"a split value of {column!r} cannot be rendered as a literal ({exc})")
        if not literals:
            return self._serial(bound, wanted, f"about {rows:,} rows, at most one connection per "
                                f"{MIN_ROWS_PER_CONNECTION:,} rows", logging.INFO)
        cur.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text")
        exported, self.snapshot = cur.fetchone()
        self.snapshot_id = snapshot_id(exported)
        self.schema, self.column = plan.schema, column
        bounds = [None, *literals, None]
        self.workers = [_Worker(self.source, self, i, bounds[i], bounds[i + 1])
                        for i in range(1, len(bounds) - 1)]
        self.note = {"connections": len(bounds) - 1, "split_column": column}
        log.info("source %s: reading about %s rows over %d connections in one snapshot, split on %s",
                 self.source.name, f"{rows:,}", len(bounds) - 1, column)
        for w in self.workers:
            w.thread.start()
        for w in self.workers:  # the coordinator's query starts once every worker shares its snapshot
            while not w.imported.wait(_POLL_S):
                pass
        self.raise_failure()
        return range_query(bound, column, None, bounds[1])

    def _serial(self, bound: str, wanted: int, why: str, level: int = logging.WARNING) -> str:
        log.log(level, "source %s: parallelism %d, but this read uses one connection: %s",
                self.source.name, wanted, why)
        self.note = {"connections": 1, "one_connection_because": why}
        return bound

    # ---------------------------------------------------------------- the rows, in order

    def batches(self, first: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The coordinator's range as it streams, then each worker's, in key order."""
        it = iter(first)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except BaseException:
                self.raise_failure()  # a worker failed (and cancelled this query): its error, not the cancel
                raise
            self.raise_failure()
            yield batch
        for w in self.workers:
            yield from w.rows()

    def close(self) -> None:
        """Stop every worker and wait until each has left its driver and closed its connection."""
        self.cancel()
        interrupted: BaseException | None = None
        for w in self.workers:
            while w.thread.is_alive():
                try:
                    w.thread.join(1.0)
                except BaseException as exc:  # a Ctrl-C while a worker is in its driver: wait for it
                    interrupted = exc
                    self.cancel()
            w.drop()
        if interrupted is not None:
            raise interrupted


@contextlib.contextmanager
def parallel_read(source: PostgresSource, query: str, window: Window, key: list[str],
                  probe: str | None = None) -> Iterator[SourceRead]:
    """``source.read(query, window, key, probe)`` over up to ``source.spec.parallelism`` connections."""
    team = _Team(source, query, window, key)
    try:
        with contextlib.ExitStack() as stack:
            try:
                read = stack.enter_context(team.coordinator.read(query, window, key, probe=probe))
            except BaseException:
                team.raise_failure()  # a worker's failure cancelled the coordinator: raise the cause
                raise
            state = {**read.state, "parallel_read": team.note}
            if not team.workers:
                yield dataclasses.replace(read, state=state)
            else:
                yield dataclasses.replace(read, batches=team.batches(read.batches), state=state,
                                          cancel=team.cancel)
    finally:
        team.close()
