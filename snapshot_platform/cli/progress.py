"""Progress on stderr for the long commands (snapshot, verify), drawn by ``rich.progress``.

Shown only when stderr is a terminal and the command was not asked for ``--json``: otherwise
nothing is drawn and stderr carries errors only. The display is transient (erased when the
command ends) and refreshed by rich's own thread several times a second, so the elapsed time and
the rate move even while a slow source is between batches. The store and ``capture.py`` know
nothing of it: they call a ``progress(rows, bytes)`` callback (``take_snapshot(progress=...)``).
rich is imported only when a bar may be drawn (not for ``--json``): scripts do not pay its import.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from rich.console import Console


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _nothing(*_: Any) -> None:
    """The callback when nothing is drawn (``--json``)."""


def shown(as_json: bool, console: Console | None = None) -> bool:
    """Whether progress is drawn: stderr is a terminal and the output is not ``--json``."""
    return not as_json and (console or _console()).is_terminal


@contextmanager
def rows_progress(description: str, as_json: bool) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(rows, bytes)`` callback drawing rows, rows/s, bytes and elapsed time (no total:
    a source does not say how many rows it will return)."""
    if as_json:
        yield _nothing
        return
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    console = _console()
    columns = (
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TextColumn("{task.fields[size]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not shown(as_json, console),
                  refresh_per_second=4) as bar:
        task = bar.add_task(description, total=None, rate=0.0, size=_size(0))

        def update(rows: int, nbytes: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=rows, rate=rows / elapsed if elapsed > 0 else 0.0, size=_size(nbytes))

        yield update


@contextmanager
def bytes_bar(description: str, total_bytes: int, total_items: int,
              as_json: bool) -> Iterator[Callable[[int, int], None]]:
    """A bar over a known total: ``advance(items, bytes)`` adds what was just done (``verify``:
    versions and their bytes, the totals from the manifests)."""
    if as_json:
        yield _nothing
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console()
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TextColumn("{task.fields[items]}/" + str(total_items)), TimeElapsedColumn(),
                  console=console, transient=True, disable=not shown(as_json, console),
                  refresh_per_second=4) as bar:
        task = bar.add_task(description, total=max(total_bytes, 1), items=0)
        done = [0]

        def advance(items: int, nbytes: int) -> None:
            done[0] += items
            bar.update(task, advance=nbytes, items=done[0])

        yield advance


@contextmanager
def rows_bar(description: str, total_rows: int, as_json: bool) -> Iterator[Callable[[int], None]]:
    """A bar over a known number of rows: ``advance(rows)`` adds the rows just read (``diff``: both
    versions' row counts from their manifests)."""
    if as_json:
        yield _nothing
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not shown(as_json, console),
                  refresh_per_second=4) as bar:
        task = bar.add_task(description, total=max(total_rows, 1))

        def advance(rows: int) -> None:
            bar.update(task, advance=rows)

        yield advance


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


__all__ = ["bytes_bar", "rows_bar", "rows_progress", "shown"]
