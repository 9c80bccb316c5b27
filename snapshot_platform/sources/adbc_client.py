"""A small DB-API-shaped client for the ADBC PostgreSQL driver, on ADBC's low-level API.

The PostgreSQL source needs a handful of cursor calls: ``execute`` (with positional ``$n``
parameters), ``fetchone``/``fetchall`` for its session queries, ``fetch_arrow_table``,
``fetch_record_batch`` for the rows, ``adbc_statement.set_options`` and ``adbc_cancel``.
``adbc_driver_manager.dbapi`` offers them, but importing it imports ``pyarrow.dataset``, and that
imports pandas: about 0.3 s of every ``snapshot-platform snapshot`` process, for a module the
snapshot never uses (benchmarks/README.md, start-up). This module does the same calls on
``adbc_driver_manager``'s own classes (``AdbcDatabase``, ``AdbcConnection``, ``AdbcStatement``)
the way the dbapi module does them:

- the same driver and URI (``adbc_driver_postgresql.connect``), autocommit as ADBC connections start;
- parameters bound as a one-row Arrow record batch, as the dbapi's pyarrow backend binds a tuple;
- every blocking call (execute, reading a whole result) through ADBC's own
  ``_blocking_call``, which turns Ctrl-C into a cancel of the statement, as the dbapi module does;
- errors are ADBC's own (``adbc_driver_manager.Error`` and subclasses, with ``sqlstate``), and a
  result streamed with ``fetch_record_batch`` is the plain ``pyarrow.RecordBatchReader`` the dbapi
  module also hands out (its errors are ``pyarrow.ArrowException``).

It is not a DB-API implementation: only what the sources call. The parallel read's connections
(sources/postgres_parallel.py) are made the same way.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Sequence

import adbc_driver_manager
import adbc_driver_postgresql
import pyarrow as pa
from adbc_driver_manager import _lib


def _blocking(fn: Any, cancel: Any) -> Any:
    # ADBC's own helper (what its DB-API module uses): Ctrl-C during ``fn`` cancels the statement
    # and is raised once ``fn`` returns. Private to adbc_driver_manager (pinned in constraints.txt);
    # should a release drop it, the call runs plainly (a Ctrl-C then waits for the server's answer)
    helper = getattr(_lib, "_blocking_call", None)
    return helper(fn, (), {}, cancel) if helper is not None else fn()


def _parameter_batch(parameters: Sequence[Any]) -> pa.RecordBatch:
    """The parameters as one row, built from buffers: any conversion of Python objects by pyarrow
    (``pa.array``, ``pa.scalar``) first imports pandas, 0.25 s. The sources bind text and integers."""
    arrays = []
    for value in parameters:
        if value is None:
            arrays.append(pa.nulls(1, pa.string()))
        elif isinstance(value, bool):
            raise TypeError("adbc_client binds text and integers; cast a boolean in the SQL")
        elif isinstance(value, int):
            arrays.append(pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("<q", value))]))
        elif isinstance(value, str):
            data = value.encode("utf-8")
            arrays.append(pa.Array.from_buffers(
                pa.string(), 1, [None, pa.py_buffer(struct.pack("<ii", 0, len(data))), pa.py_buffer(data)]))
        else:
            raise TypeError(f"adbc_client binds text and integers, not {type(value).__name__}")
    return pa.RecordBatch.from_arrays(arrays, names=[str(i) for i in range(len(arrays))])


class Statement:
    """``cursor.adbc_statement``: the options of the statement the next ``execute`` runs."""

    def __init__(self, stmt: Any):
        self._stmt = stmt

    def set_options(self, **options: str) -> None:
        self._stmt.set_options(**options)


class Cursor:
    """One ADBC statement; a new ``execute`` closes the previous result first."""

    def __init__(self, connection: "Connection"):
        self._closed = True
        self._stmt = adbc_driver_manager.AdbcStatement(connection._conn)
        self._closed = False
        self._handle: Any = None  # the result's stream, not yet imported
        self._reader: pa.RecordBatchReader | None = None
        self._rows: deque[tuple[Any, ...]] | None = None  # fetchone/fetchall's rows

    @property
    def adbc_statement(self) -> Statement:
        return Statement(self._stmt)

    def _clear(self) -> None:
        self._rows = None
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        elif self._handle is not None:
            handle, self._handle = self._handle, None
            handle.release()

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> "Cursor":
        self._clear()
        self._stmt.set_sql_query(operation)
        if parameters:
            self._stmt.bind(_parameter_batch(parameters))
        self._handle, _ = _blocking(self._stmt.execute_query, self._stmt.cancel)
        return self

    def _result(self) -> pa.RecordBatchReader:
        if self._reader is None:
            if self._handle is None:
                raise adbc_driver_manager.ProgrammingError(
                    "no result: execute() first (or the result was consumed)",
                    status_code=_lib.AdbcStatusCode.INVALID_STATE)
            handle, self._handle = self._handle, None
            self._reader = pa.RecordBatchReader._import_from_c(handle.address)
        return self._reader

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        """The result as a stream of record batches, read as they are pulled."""
        return self._result()

    def fetch_arrow_table(self) -> pa.Table:
        return _blocking(self._result().read_all, self._stmt.cancel)

    def _all_rows(self) -> deque[tuple[Any, ...]]:
        table = self.fetch_arrow_table()
        columns = [c.to_pylist() for c in table.columns]
        return deque(zip(*columns)) if columns else deque(() for _ in range(table.num_rows))

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            self._rows = self._all_rows()
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._rows is None:
            self._rows = self._all_rows()
        return self._rows.popleft() if self._rows else None

    def adbc_cancel(self) -> None:
        """Cancel the statement's work on the server (thread-safe, by ADBC's contract)."""
        self._stmt.cancel()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._clear()
        finally:
            self._stmt.close()
            self._closed = True

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Connection:
    """An ADBC database and connection to PostgreSQL, in autocommit mode."""

    def __init__(self, uri: str):
        self._db = self._conn = None
        try:
            self._db = adbc_driver_postgresql.connect(uri)
            self._conn = adbc_driver_manager.AdbcConnection(self._db)
        except BaseException:
            self.close()
            raise

    def cursor(self) -> Cursor:
        return Cursor(self)

    def close(self) -> None:
        conn, db, self._conn, self._db = self._conn, self._db, None, None
        try:
            if conn is not None:
                conn.close()
        finally:
            if db is not None:
                db.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(uri: str) -> Connection:
    """A connection to ``uri`` (a libpq URI), autocommit."""
    return Connection(uri)
