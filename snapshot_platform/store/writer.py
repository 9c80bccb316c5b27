"""Stream Arrow record batches into Parquet part files, hashing the bytes as they are written.

Memory stays bounded: at most ``prefetch`` source batches wait in a queue, and at most one row group
is buffered before it is written. Row groups are cut at fixed row counts, whatever batch sizes the
source produced, so the same rows in the same order always give the same bytes.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


_LEVELLED = {"zstd", "gzip", "brotli", "lz4"}


@dataclass(frozen=True)
class WriterSettings:
    compression: str = "zstd"
    compression_level: int = 1
    row_group_rows: int = 131_072
    part_rows: int = 4_194_304  # a new part file every 32 row groups

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "parquet",
            "compression": self.compression,
            "compression_level": self.compression_level,
            "row_group_rows": self.row_group_rows,
            "part_rows": self.part_rows,
        }


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


class _HashingFile:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        mv = memoryview(data)
        self.sha.update(mv)
        self.size += mv.nbytes
        self._raw.write(mv)
        return mv.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        # The ParquetWriter closes us when it finishes; the owner closes the raw file.
        self.closed = True


def prefetch(batches: Iterable[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Pull from ``batches`` in a background thread, at most ``depth`` ahead.

    The database driver decodes the next batch while this thread compresses and writes the last one;
    the bounded queue is what keeps memory flat when the writer is slower than the reader.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def pump() -> None:
        it = iter(batches)
        try:
            for b in it:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                close()

    t = threading.Thread(target=pump, name="snapshot-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=30)


def write_parts(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    open_part: Any,
    settings: WriterSettings = WriterSettings(),
) -> WrittenData:
    """Write ``batches`` as Parquet parts; ``open_part(name)`` returns a binary file opened for writing.

    Every batch must have ``schema``. A snapshot with no rows still gets one (empty) part, so that its
    schema is recorded in Parquet too.
    """
    out = WrittenData(schema=schema)
    state: dict[str, Any] = {"writer": None, "raw": None, "hf": None, "rows": 0}

    def start_part() -> None:
        name = f"part-{len(out.parts):05d}.parquet"
        raw = open_part(name)
        hf = _HashingFile(raw)
        writer = pq.ParquetWriter(
            hf,
            schema,
            compression=settings.compression,
            compression_level=settings.compression_level if settings.compression in _LEVELLED else None,
            write_statistics=True,
        )
        state.update(writer=writer, raw=raw, hf=hf, rows=0, name=name)

    def finish_part() -> None:
        state["writer"].close()
        raw = state["raw"]
        raw.flush()
        raw.close()
        hf = state["hf"]
        out.parts.append(WrittenPart(state["name"], hf.sha.hexdigest(), hf.size, state["rows"]))
        state["writer"] = None

    def write_group(table: pa.Table) -> None:
        if state["writer"] is None:
            start_part()
        # one contiguous chunk per row group: the encoder's choices (e.g. when a dictionary
        # overflows to plain encoding) then depend on the rows alone, not on the source's batch sizes
        state["writer"].write_table(table.combine_chunks(), row_group_size=settings.row_group_rows)
        state["rows"] += table.num_rows
        if state["rows"] >= settings.part_rows:
            finish_part()

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if not batch.schema.equals(schema):
                raise TypeError(
                    f"a batch's schema differs from the snapshot's: {batch.schema} vs {schema}"
                )
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= settings.row_group_rows:
                table = pa.Table.from_batches(pending, schema=schema)
                head = table.slice(0, settings.row_group_rows)
                write_group(head)
                rest = table.slice(settings.row_group_rows)
                pending = rest.to_batches()
                pending_rows = rest.num_rows
        if pending_rows:
            write_group(pa.Table.from_batches(pending, schema=schema))
        if state["writer"] is not None:
            finish_part()
        if not out.parts:
            start_part()
            finish_part()
    except BaseException:
        if state["writer"] is not None:
            try:
                state["writer"].close()
            finally:
                state["raw"].close()
        raise
    return out
