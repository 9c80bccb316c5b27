"""SQLite: the embedded demo's "production database".

The file is opened read-only (``mode=ro`` and ``PRAGMA query_only``), the read runs inside one
transaction (one consistent snapshot in WAL mode), and a progress handler enforces the statement
timeout, which SQLite itself does not have. SQLite has no date type: the window is bound as text
``YYYY-MM-DD HH:MM:SS`` in UTC, which compares correctly with ISO dates through ``date()`` and
``datetime()``. A relative ``path`` is relative to the platform home, ``$SNAPSHOT_PLATFORM_HOME``
(default ``~/.snapshot_platform``).

Types. SQLite types values, not columns: each value is an INTEGER, REAL, TEXT or BLOB (its
``typeof()``). A column's Arrow type comes from the values of the first batch, and every later
value must fit it exactly: INTEGER → ``int64``, REAL → ``float64`` (integers alongside reals only
where the double holds them exactly, |n| ≤ 2^53), TEXT → ``string``, BLOB → ``binary``, a column
of NULLs → ``string``. Columns declared ``DATE`` hold ``YYYY-MM-DD`` text and become ``date32``;
columns declared ``DATETIME``/``TIMESTAMP`` hold ISO 8601 text (at most microseconds; without an
offset it is UTC) and become UTC timestamps. Anything else (text in an integer column, a value the
declared date type does not describe, a later value of another kind) fails the read naming the
column and its storage classes: ``CAST`` it in the query. ``source_types`` records the declared
date type, else the storage classes seen (``integer``, ``real, integer``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Literal

import pyarrow as pa

from snapshot_platform.home import platform_home
from snapshot_platform.secrets import SecretOrLiteral, resolve
from snapshot_platform.sources.base import (
    Source,
    SourceError,
    SourceRead,
    SourceSpecBase,
    Window,
    fingerprint_of,
    ordered,
)


class SqliteSourceSpec(SourceSpecBase):
    kind: Literal["sqlite"]
    path: SecretOrLiteral


_BATCH_ROWS = 50_000
_EXACT_INT = 2**53  # integers a double holds exactly
_DECLARED = ("DATE", "DATETIME", "TIMESTAMP")
_STORAGE = {int: "integer", float: "real", str: "text", bytes: "blob"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


def _declared(name: str) -> Any:
    """A converter that only tags the raw value with its declared type: parsed, with errors naming
    the column, when the batch is built (a converter does not know its column)."""
    return lambda raw: (name, raw)


def _parse(declared: str, raw: bytes) -> dt.date | dt.datetime:
    """The value of a DATE/DATETIME/TIMESTAMP column's text, or ValueError: never a truncated value."""
    text = raw.decode("utf-8")
    try:
        if declared == "DATE":
            if not _DATE.fullmatch(text):
                raise ValueError(text)
            return dt.date.fromisoformat(text)
        if not _TIMESTAMP.fullmatch(text):
            raise ValueError(text)
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # (fromisoformat's own message does not show the value)
        raise ValueError(text) from None
    return t.astimezone(dt.timezone.utc) if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


class _Column:
    """One result column's type, fixed by the first batch; later values must fit it exactly."""

    def __init__(self, source: str, name: str, values: list[Any]):
        self.source, self.name = source, name
        self.declared = next((v[0] for v in values if isinstance(v, tuple)), None)
        kinds = {type(v) for v in values if v is not None}
        if self.declared:
            self.type = pa.date32() if self.declared == "DATE" else pa.timestamp("us", tz="UTC")
            self.source_type = self.declared
        elif kinds == {int}:
            self.type, self.source_type = pa.int64(), "integer"
        elif kinds and kinds <= {int, float}:
            self.type, self.source_type = pa.float64(), ", ".join(sorted(_STORAGE[k] for k in kinds))
        elif kinds == {str}:
            self.type, self.source_type = pa.string(), "text"
        elif kinds == {bytes}:
            self.type, self.source_type = pa.binary(), "blob"
        elif not kinds:
            self.type, self.source_type = pa.string(), "null"
        else:
            raise SourceError(self._mixed(kinds))

    def _mixed(self, kinds: set[type], later: bool = False) -> str:
        seen = ", ".join(sorted(_STORAGE.get(k, "date text") for k in kinds))
        where = f"source {self.source}: column {self.name!r}"
        if later:
            return (f"{where} ({self.source_type} in the first {_BATCH_ROWS} rows) holds {seen} values later, "
                    f"which {self.type} cannot hold exactly: CAST it in the query (e.g. CAST({self.name} AS TEXT))")
        return (f"{where} holds values of different storage classes ({seen}) that no one Arrow type holds "
                f"exactly: CAST it in the query (e.g. CAST({self.name} AS TEXT))")

    def array(self, values: list[Any]) -> pa.Array:
        if self.declared:
            try:
                values = [None if v is None else _parse(self.declared, v[1] if isinstance(v, tuple) else v)
                          for v in values]
            except ValueError as exc:  # UnicodeDecodeError included
                bad = exc.object if isinstance(exc, UnicodeDecodeError) else exc.args[0]
                what = "a YYYY-MM-DD date" if self.declared == "DATE" else (
                    "an ISO 8601 date and time with at most microseconds")
                raise SourceError(
                    f"source {self.source}: column {self.name!r} (declared {self.declared}) holds {bad!r}, "
                    f"which is not {what}: fix the value, or CAST({self.name} AS TEXT) in the query to keep the text"
                ) from None
            return pa.array(values, type=self.type)
        kinds = {type(v) for v in values if v is not None}
        if self.type == pa.float64():
            fits = kinds <= {int, float} and all(abs(v) <= _EXACT_INT for v in values if type(v) is int)
        else:
            fits = kinds <= {{pa.int64(): int, pa.string(): str, pa.binary(): bytes}[self.type]}
        if not fits:
            if self.type == pa.float64() and kinds <= {int, float}:
                raise SourceError(f"source {self.source}: column {self.name!r} holds integers beyond 2^53 among "
                                  f"reals, which float64 cannot hold exactly: CAST it in the query")
            raise SourceError(self._mixed(kinds, later=True))
        return pa.array(values, type=self.type)


class SqliteSource(Source):
    kind = "sqlite"
    serial_reason = ("a second SQLite connection cannot share the first one's read transaction, and a local "
                     "file gains nothing from more connections")
    supports_probe = True
    spec: SqliteSourceSpec

    def _path(self) -> Path:
        """A relative path is relative to the platform home ($SNAPSHOT_PLATFORM_HOME)."""
        return (platform_home() / Path(resolve(self.spec.path)).expanduser()).resolve()

    def describe(self) -> dict[str, Any]:
        return {"kind": "sqlite", "host": None, "database": self._path().name}

    @contextlib.contextmanager
    def read(self, query: str | None, window: Window, key: list[str], probe: str | None = None) -> Iterator[SourceRead]:
        path = self._path()
        if not path.exists():
            raise SourceError(f"source {self.name}: SQLite database {path} does not exist")
        for name in _DECLARED:
            sqlite3.register_converter(name, _declared(name))
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode=ro",
            uri=True,
            timeout=self.spec.connect_timeout_s,
            detect_types=sqlite3.PARSE_DECLTYPES,
            isolation_level=None,
            check_same_thread=False,  # batches are pulled by the store's prefetch thread
        )
        deadline = time.monotonic() + self.spec.statement_timeout_s
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            fmt = "%Y-%m-%d %H:%M:%S"
            bound = {
                "partition_start": window.start.astimezone(dt.timezone.utc).strftime(fmt),
                "partition_end": window.end.astimezone(dt.timezone.utc).strftime(fmt),
            }
            fingerprint = None
            if probe is not None:  # in the same read transaction, before the query
                try:
                    pc = conn.execute(probe.rstrip().rstrip(";"), bound)
                    fingerprint = fingerprint_of(self.name, [d[0] for d in pc.description], pc.fetchall())
                except sqlite3.OperationalError as exc:
                    raise self._error(exc) from None
            if query is None:
                yield SourceRead(schema=pa.schema([]), batches=iter(()), params=window.as_params(),
                                 state={"engine": "sqlite"}, fingerprint=fingerprint)
                return
            try:
                cur = conn.execute(ordered(query, key), bound)
                first = cur.fetchmany(_BATCH_ROWS)
            except sqlite3.OperationalError as exc:
                raise self._error(exc) from None
            names = [d[0] for d in cur.description]
            columns = [_Column(self.name, n, [r[i] for r in first]) for i, n in enumerate(names)]
            schema = pa.schema([pa.field(c.name, c.type) for c in columns])

            def batches() -> Iterator[pa.RecordBatch]:
                rows = first
                while rows:
                    cols = list(zip(*rows))
                    arrays = [c.array(list(values)) for c, values in zip(columns, cols)]
                    yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                    try:
                        rows = cur.fetchmany(_BATCH_ROWS)
                    except sqlite3.OperationalError as exc:
                        raise self._error(exc) from None

            state = {"engine": "sqlite", "sqlite_version": sqlite3.sqlite_version,
                     "data_version": conn.execute("PRAGMA data_version").fetchone()[0]}
            yield SourceRead(schema=schema, batches=batches(), params=window.as_params(), state=state,
                             source_types={c.name: c.source_type for c in columns},
                             cancel=conn.interrupt,  # thread-safe: ends the running statement
                             # SQLite has no server clock: the local clock at the read's start
                             read_at=dt.datetime.now(dt.timezone.utc), fingerprint=fingerprint)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()

    def _error(self, exc: sqlite3.Error) -> SourceError:
        msg = str(exc)
        if msg == "interrupted":
            return SourceError(
                f"source {self.name}: query cancelled after the statement timeout of "
                f"{self.spec.statement_timeout_s:g}s",
                code="timeout",
            )
        if msg.startswith("Could not decode to UTF-8"):
            msg += ": CAST it AS BLOB in the query to keep its bytes"
        transient = "locked" in msg or "busy" in msg
        return SourceError(f"source {self.name}: {msg}", transient=transient)
