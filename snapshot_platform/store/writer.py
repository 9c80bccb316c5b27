"""Stream Arrow record batches into Parquet part files, each hashed as it is written out.

Memory stays bounded: at most ``prefetch`` source batches wait in a queue, at most one row group
is buffered before it is encoded, and one part's compressed bytes before they are hashed and
written. Row groups are cut at fixed row counts, whatever batch sizes the source produced, so the
same rows in the same order always give the same bytes; parts end at content-defined boundaries
along the key order (store/boundaries.py), so unchanged key ranges give unchanged parts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from snapshot_platform.store.boundaries import METHOD, PartCutter, boundary_columns

_LEVELLED = {"zstd", "gzip", "brotli", "lz4"}


@dataclass(frozen=True)
class WriterSettings:
    """How rows become Parquet bytes; recorded in every manifest (``writer``).

    A part ends after a row whose key hash is 0 modulo ``part_boundary_modulus`` once it holds
    ``part_min_rows`` rows, and at ``part_rows`` rows at the latest (store/boundaries.py): about
    17,000 rows a part with the defaults (benchmarks/README.md: what the part size costs and
    saves). Within a part, row groups hold ``row_group_rows`` rows.
    """

    compression: str = "zstd"
    compression_level: int = 1
    row_group_rows: int = 131_072
    part_rows: int = 131_072  # at most: a part is cut here whatever its content
    part_min_rows: int = 2_048  # no content-defined boundary before this (no tiny files)
    part_boundary_modulus: int = 16_384
    # Encodings, chosen for what a snapshot holds (benchmarks/README.md, "Parquet encoding"):
    # dictionary pages only for text and binary columns (a dictionary of distinct numbers costs
    # encoding time and, after zstd, bytes); min/max statistics only for the other columns (text
    # min/max costs a comparison per value and rarely prunes); DECIMAL of precision <= 18 stored
    # as INT32/INT64 (the Parquet spec's integer-backed decimal), not as fixed-length bytes.
    dictionary: str = "text"  # "text": string/binary columns only; "all": pyarrow's default
    statistics: str = "non-text"  # "non-text": every column but strings/binary; "all"
    decimal_storage: str = "integer"  # "integer" up to precision 18; "fixed": fixed-length bytes

    def __post_init__(self) -> None:
        for name, allowed in (("dictionary", ("text", "all")), ("statistics", ("non-text", "all")),
                              ("decimal_storage", ("integer", "fixed"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"WriterSettings.{name}: expected one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, name)!r}")

    def parquet_options(self, schema: pa.Schema) -> dict[str, Any]:
        """The ``pyarrow.parquet.ParquetWriter`` keyword arguments these settings give for ``schema``."""
        leaves = [leaf for f in schema for leaf in _leaves(f.name, f.type)]
        text = [path for path, t in leaves if _is_text(t)]
        other = [path for path, t in leaves if not _is_text(t)]
        return {
            "compression": self.compression,
            "compression_level": self.compression_level if self.compression in _LEVELLED else None,
            # a list names the columns; an empty list means none
            "use_dictionary": True if self.dictionary == "all" else (text or False),
            "write_statistics": True if self.statistics == "all" else (other or False),
            "store_decimal_as_integer": self.decimal_storage == "integer",
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "parquet",
            "compression": self.compression,
            "compression_level": self.compression_level,
            "row_group_rows": self.row_group_rows,
            "part_rows": self.part_rows,
            "part_boundaries": METHOD,
            "part_min_rows": self.part_min_rows,
            "part_boundary_modulus": self.part_boundary_modulus,
            "dictionary": self.dictionary,
            "statistics": self.statistics,
            "decimal_storage": self.decimal_storage,
        }


def _leaves(path: str, t: pa.DataType) -> list[tuple[str, pa.DataType]]:
    """The Parquet column paths under an Arrow field, with their Arrow types: the names pyarrow's
    writer matches ``use_dictionary``/``write_statistics`` lists against (its compliant nested
    names: ``tags.list.element``, ``address.city``, ``attrs.key_value.key``)."""
    if isinstance(t, pa.BaseExtensionType):
        return _leaves(path, t.storage_type)
    if pa.types.is_dictionary(t):
        return _leaves(path, t.value_type)
    if pa.types.is_map(t):
        return _leaves(f"{path}.key_value.key", t.key_type) + _leaves(f"{path}.key_value.value", t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _leaves(f"{path}.list.element", t.value_type)
    if pa.types.is_struct(t):
        return [leaf for i in range(t.num_fields) for leaf in _leaves(f"{path}.{t.field(i).name}", t.field(i).type)]
    return [(path, t)]


def _is_text(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t))


@dataclass
class WrittenPart:
    path: str  # relative to the version folder
    sha256: str
    bytes: int
    rows: int


@dataclass
class WrittenData:
    schema: pa.Schema
    parts: list[WrittenPart] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return sum(p.rows for p in self.parts)


class StorageWriteError(RuntimeError):
    """Writing the snapshot's bytes failed (disk full, an object store refusing a write, ...).

    The message is one line naming the cause and where: ``No space left on device (ENOSPC) writing
    file:///.../part-00000.parquet``. ``errno`` is the OS error number when the cause had one.
    """

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def describe_failure(exc: BaseException) -> str:
    """One line for a storage error: ``No space left on device (ENOSPC)``, else the error's own text."""
    num = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and isinstance(num, int) and num in errno.errorcode:
        return f"{exc.strerror or os.strerror(num)} ({errno.errorcode[num]})"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def storage_write_error(exc: BaseException, where: str) -> StorageWriteError:
    if isinstance(exc, StorageWriteError):
        return exc
    num = getattr(exc, "errno", None)
    return StorageWriteError(f"{describe_failure(exc)} writing {where}",
                             num if isinstance(num, int) else None)


class Prefetch:
    """Pull from ``batches`` in a background thread, at most ``depth`` batches ahead.

    The database driver decodes the next batch while the caller compresses and writes the last one;
    the bounded queue is what keeps memory flat when the writer is slower than the reader.

    Use it as a context manager (or call :meth:`close`): leaving it stops the thread and *waits for
    it*, so the caller may close the source's cursor and connection afterwards. A driver must never
    be closed while this thread is inside it (that crashed the process with a segmentation fault).
    If the thread is still inside the driver (a fetch waiting for the server), ``cancel`` (the
    source's server-side cancel, e.g. ADBC's ``adbc_cancel``) is called to end that fetch. The wait
    has no timeout (the statement timeout bounds a fetch anyway); a Ctrl-C, or any exception a signal
    handler raises, during it only cancels again and is raised once the thread is gone. The
    source's iterator is closed in the thread itself.
    """

    _DONE = object()

    def __init__(self, batches: Iterable[pa.RecordBatch], depth: int = 2,
                 cancel: Callable[[], None] | None = None, grace_s: float = 0.5):
        self._batches = batches
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._cancel = cancel
        self._grace_s = grace_s
        self._finished = False  # the consumer saw the end (or the error) of the stream
        self._thread = threading.Thread(target=self._pump, name="snapshot-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        it = iter(self._batches)
        try:
            for b in it:
                if not self._put(b):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()  # in this thread: never concurrently with a fetch
                except Exception:
                    pass

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is self._DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and wait until it has left the driver (see the class docstring)."""
        self._stop.set()
        t = self._thread
        if not t.is_alive():
            return
        t.join(self._grace_s)
        if not t.is_alive():
            return
        interrupted: BaseException | None = None
        self._cancel_fetch()
        while t.is_alive():
            try:
                t.join(1.0)
            except BaseException as exc:  # Ctrl-C, SIGTERM, Dagster's interrupt: the thread is in
                interrupted = exc         # the driver, and leaving now would crash: wait for it
                self._cancel_fetch()
        if interrupted is not None:
            raise interrupted

    def _cancel_fetch(self) -> None:
        if self._cancel is not None:
            try:
                self._cancel()
            except Exception:
                pass


def prefetch(batches: Iterable[pa.RecordBatch], depth: int = 2,
             cancel: Callable[[], None] | None = None) -> Prefetch:
    """:class:`Prefetch` over ``batches``; close it (``with``) before closing the source."""
    return Prefetch(batches, depth, cancel)


def write_parts(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    open_part: Any,
    settings: WriterSettings = WriterSettings(),
    where: Callable[[str], str] = str,
    key: list[str] | tuple[str, ...] | None = None,
    part_done: Callable[[WrittenPart, Any], None] | None = None,
) -> WrittenData:
    """Write ``batches`` as Parquet parts; ``open_part(name)`` returns a binary file opened for writing.

    Parts end at content-defined boundaries along the key order (store/boundaries.py: the hash of
    the ``key`` columns, ``settings.part_boundary_modulus``, ``part_min_rows``, ``part_rows``), and
    within a part row groups are cut every ``settings.row_group_rows`` rows from the part's start:
    the same rows give the same parts, byte for byte, whatever batch sizes the source produced.

    Every batch must have ``schema``. A snapshot with no rows still gets one (empty) part, so that its
    schema is recorded in Parquet too. A failure to write (disk full, a refused upload) is raised as
    :class:`StorageWriteError` naming the cause and ``where(part name)``; an error of ``batches``
    (the source) is raised as it is.

    ``part_done(part, raw)``, if given, is called as each part is complete (its bytes flushed to
    ``raw``, the file ``open_part`` returned, its hash known), before ``raw`` is closed and before
    the next part is opened; an error it raises ends the writing like a failed write.
    """
    out = WrittenData(schema=schema)
    state: dict[str, Any] = {"writer": None, "raw": None, "sink": None, "rows": 0}
    options = settings.parquet_options(schema)
    cutter = PartCutter(boundary_columns(schema, key), settings.part_boundary_modulus,
                        settings.part_min_rows, settings.part_rows)

    def writing(step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:
            raise storage_write_error(exc, where(state.get("name") or f"part-{len(out.parts):05d}.parquet")) from exc

    def start_part() -> None:
        name = f"part-{len(out.parts):05d}.parquet"
        state["name"] = name
        raw = open_part(name)
        state["raw"] = raw
        # the part's bytes gather in memory (compressed: less than the Arrow rows of a row group the
        # writer holds anyway; a part has at most part_rows rows), then are hashed and written in one
        # call each: tens of small writes per column through Python cost ~7% of the writer's time
        sink = pa.BufferOutputStream()
        writer = pq.ParquetWriter(sink, schema, **options)
        state.update(writer=writer, raw=raw, sink=sink, rows=0, name=name)

    def finish_part() -> None:
        state["writer"].close()
        data = state["sink"].getvalue()
        state["sink"] = None
        raw = state["raw"]
        raw.write(data)
        raw.flush()
        part = WrittenPart(state["name"], hashlib.sha256(data).hexdigest(), data.size, state["rows"])
        if part_done is not None:
            part_done(part, raw)
        raw.close()
        out.parts.append(part)
        state["writer"] = None

    def write_group(table: pa.Table) -> None:
        if state["writer"] is None:
            start_part()
        # one contiguous chunk per row group: the encoder's choices (e.g. when a dictionary
        # overflows to plain encoding) then depend on the rows alone, not on the source's batch sizes
        state["writer"].write_table(table.combine_chunks(), row_group_size=settings.row_group_rows)
        state["rows"] += table.num_rows

    pending: list[pa.RecordBatch] = []  # rows of the current part not yet written as a row group
    pending_rows = 0

    def add(rows: pa.RecordBatch) -> None:
        nonlocal pending, pending_rows
        if rows.num_rows:
            pending.append(rows)
            pending_rows += rows.num_rows
        while pending_rows >= settings.row_group_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            writing(write_group, table.slice(0, settings.row_group_rows))
            rest = table.slice(settings.row_group_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows

    def end_part() -> None:
        nonlocal pending, pending_rows
        if pending_rows:
            writing(write_group, pa.Table.from_batches(pending, schema=schema))
        pending, pending_rows = [], 0
        if state["writer"] is not None:
            writing(finish_part)

    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if not batch.schema.equals(schema):
                raise TypeError(
                    f"a batch's schema differs from the snapshot's: {batch.schema} vs {schema}"
                )
            start = 0
            for end in cutter.cuts(batch):
                add(batch.slice(start, end - start))
                end_part()
                start = end
            if start < batch.num_rows:
                add(batch.slice(start))
        end_part()
        if not out.parts:
            writing(start_part)
            writing(finish_part)
    except BaseException:
        # quietly: a second error (the disk is still full) must not replace the first
        if state["writer"] is not None:
            try:
                state["writer"].close()
            except Exception:
                pass
        if state["raw"] is not None and not getattr(state["raw"], "closed", False):
            try:
                state["raw"].close()
            except Exception:
                pass
        raise
    return out
