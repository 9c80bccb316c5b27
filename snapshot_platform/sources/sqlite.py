"""SQLite: the embedded demo's "production database".

The file is opened read-only (``mode=ro`` and ``PRAGMA query_only``), the read runs inside one
transaction (one consistent snapshot in WAL mode), and a progress handler enforces the statement
timeout, which SQLite itself does not have. SQLite has no date type: the window is bound as text
``YYYY-MM-DD HH:MM:SS`` in UTC, which compares correctly with ISO dates through ``date()`` and
``datetime()``. Columns declared ``DATE`` or ``TIMESTAMP``/``DATETIME`` come out as Arrow dates and
timestamps; other types are inferred from the values. A relative ``path`` is relative to the
platform home, ``$SNAPSHOT_PLATFORM_HOME`` (default ``~/.snapshot_platform``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from snapshot_platform.catalog import SqliteSourceSpec, resolve
from snapshot_platform.home import platform_home
from snapshot_platform.sources.base import Source, SourceError, SourceRead, Window, ordered

_BATCH_ROWS = 50_000


def _to_date(raw: bytes) -> dt.date:
    return dt.date.fromisoformat(raw.decode()[:10])


def _to_timestamp(raw: bytes) -> dt.datetime:
    t = dt.datetime.fromisoformat(raw.decode().replace("Z", "+00:00"))
    return t.astimezone(dt.timezone.utc) if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


_CONVERTERS = {"DATE": _to_date, "TIMESTAMP": _to_timestamp, "DATETIME": _to_timestamp}


def _arrow_type(values: list[Any]) -> pa.DataType:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.string()
    if kinds == {bool} or kinds == {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {dt.date}:
        return pa.date32()
    if kinds == {dt.datetime}:
        return pa.timestamp("us", tz="UTC")
    if kinds == {bytes}:
        return pa.binary()
    return pa.string()


class SqliteSource(Source):
    kind = "sqlite"
    spec: SqliteSourceSpec

    def _path(self) -> Path:
        """A relative path is relative to the platform home ($SNAPSHOT_PLATFORM_HOME)."""
        return (platform_home() / Path(resolve(self.spec.path)).expanduser()).resolve()

    def describe(self) -> dict[str, Any]:
        return {"kind": "sqlite", "host": None, "database": self._path().name}

    @contextlib.contextmanager
    def read(self, query: str, window: Window, key: list[str]) -> Iterator[SourceRead]:
        path = self._path()
        if not path.exists():
            raise SourceError(f"source {self.name}: SQLite database {path} does not exist")
        for name, conv in _CONVERTERS.items():
            sqlite3.register_converter(name, conv)
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
            try:
                cur = conn.execute(ordered(query, key), bound)
                first = cur.fetchmany(_BATCH_ROWS)
            except sqlite3.OperationalError as exc:
                raise self._error(exc) from None
            names = [d[0] for d in cur.description]
            schema = pa.schema([pa.field(n, _arrow_type([r[i] for r in first])) for i, n in enumerate(names)])

            def batches() -> Iterator[pa.RecordBatch]:
                rows = first
                while rows:
                    cols = list(zip(*rows))
                    try:
                        arrays = [pa.array(list(c), type=f.type) for c, f in zip(cols, schema)]
                    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                        raise SourceError(
                            f"source {self.name}: a column changes type between rows ({exc}); "
                            "CAST it in the query"
                        ) from None
                    yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                    try:
                        rows = cur.fetchmany(_BATCH_ROWS)
                    except sqlite3.OperationalError as exc:
                        raise self._error(exc) from None

            state = {"engine": "sqlite", "sqlite_version": sqlite3.sqlite_version,
                     "data_version": conn.execute("PRAGMA data_version").fetchone()[0]}
            yield SourceRead(schema=schema, batches=batches(), params=window.as_params(), state=state)
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
        transient = "locked" in msg or "busy" in msg
        return SourceError(f"source {self.name}: {msg}", transient=transient)
