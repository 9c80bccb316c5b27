"""The report of a keyed diff of two snapshot versions (``diff.py`` computes it; ``diff --json``
prints :meth:`DataDiff.to_json`, and ``compare`` carries one per snapshot partition)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from snapshot_platform.report import Report


@dataclass(frozen=True)
class SchemaChange(Report):
    """A column added, removed or retyped from version a to version b."""

    column: str
    change: str
    """``added``, ``removed`` or ``type_changed``."""
    type_a: str | None
    """The Arrow type in version a (None: added)."""
    type_b: str | None
    """The Arrow type in version b (None: removed)."""


@dataclass(frozen=True)
class ColumnShift(Report):
    """One column's summary statistics on each side and how they moved (b − a)."""

    a: Mapping[str, Any] | None
    """Version a's statistics (None: not in a): ``rows``, ``nulls``, ``null_fraction``, and for a
    numeric column ``mean``, ``std``, ``min``, ``max``, for text and time ``min``, ``max``."""
    b: Mapping[str, Any] | None
    """Version b's statistics, as ``a``."""
    shift: Mapping[str, float]
    """b − a of ``null_fraction`` and of each numeric statistic both have, and ``mean_in_std_a``
    (the mean's move in a's standard deviations) where a's std is not zero; empty when a side lacks it."""


@dataclass(frozen=True)
class DiffSamples(Report):
    """The keys of the first few rows of each kind (as JSON values)."""

    added: tuple[Mapping[str, Any], ...] = ()
    removed: tuple[Mapping[str, Any], ...] = ()
    changed: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class DataDiff(Report):
    """Version a (older) against version b (newer) of one partition; either side may be absent."""

    asset: str
    partition: str
    version_a: str | None
    """None: the partition has no version a (every row of b is added)."""
    version_b: str | None
    """None: the partition has no version b (every row of a is removed)."""
    key: tuple[str, ...]
    """The key rows are matched by."""
    rows_a: int
    rows_b: int
    schema_changes: tuple[SchemaChange, ...]
    same_version: bool
    """Both sides are the same version: nothing was read, every row is unchanged."""
    rows_added: int
    rows_removed: int
    rows_changed: int
    """Rows whose key is in both versions and whose value differs in a column both have."""
    rows_unchanged: int
    changed_by_column: Mapping[str, int]
    """Column -> rows whose value in it changed (only columns with changes, by name)."""
    columns: Mapping[str, ColumnShift]
    """Every column of either side (a's order, then b's new ones); empty for the same version."""
    samples: DiffSamples
    method: str
    """How rows were matched: ``merge-join on the key``, ``hash-partitioned join (<why>)`` or
    ``same version``."""
