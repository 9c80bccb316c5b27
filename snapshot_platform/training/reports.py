"""The reports of ``compare`` (two training runs side by side, ``compare.py``) and ``reproduce``
(a run trained again from its lock, ``reproduce.py``); ``--json`` prints their :meth:`to_json`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from snapshot_platform.report import Report
from snapshot_platform.store.diff_report import DataDiff

# ---------------------------------------------------------------- compare


@dataclass(frozen=True)
class MetricDelta(Report):
    """One metric of both runs."""

    a: float | None
    """Run a's value (None: run a did not log it)."""
    b: float | None
    delta: float | None
    """b − a (None when a run lacks the metric)."""
    better: str | None
    """``a``, ``b``, ``same``, or None when it is not known which direction is better."""


@dataclass(frozen=True)
class PartitionDiff(Report):
    """One snapshot partition either run trained on: the data diff of its two versions, or why
    there is none (a version gone from the store, keys that differ)."""

    asset: str
    partition: str
    version_a: str | None
    """The version run a trained on (None: run a did not use this partition)."""
    version_b: str | None
    in_run: str
    """``both``, ``a`` or ``b``: which runs trained on the partition."""
    diff: DataDiff | None = None
    """The data diff (None: ``error`` says why not)."""
    error: str | None = None

    @property
    def changed(self) -> bool:
        """The runs trained on different versions (or only one of them on this partition)."""
        return self.version_a != self.version_b

    def rows(self, what: str) -> int | None:
        """``rows_added``, ``rows_removed`` or ``rows_changed`` of the diff (None: no diff)."""
        return getattr(self.diff, what) if self.diff is not None else None

    def as_dict(self) -> dict[str, Any]:
        """Its own writer (two shapes): the diff's JSON object and ``in_run``; without a diff, the
        versions, the error and ``in_run``."""
        if self.diff is not None:
            return {**self.diff.as_dict(), "in_run": self.in_run}
        return {"asset": self.asset, "partition": self.partition, "version_a": self.version_a,
                "version_b": self.version_b, "rows_added": None, "rows_removed": None, "rows_changed": None,
                "schema_changes": [], "error": self.error, "in_run": self.in_run}


@dataclass(frozen=True)
class SpecChange(Report):
    """A field of the logged model spec that differs: ``name``, or a dotted path such as
    ``estimator.params.C``."""

    field: str
    a: Any
    b: Any


@dataclass(frozen=True)
class CodeVersions(Report):
    a: str | None
    b: str | None
    same: bool


@dataclass(frozen=True)
class RunPair(Report):
    """A run parameter of both runs, as logged (text)."""

    a: Any
    b: Any


@dataclass(frozen=True)
class Verdict(Report):
    """What differs between the runs, and so what the metric differences can be attributed to."""

    cause: str
    """``nothing``, ``data``, ``model`` or ``both``."""
    data_changed: bool
    model_changed: bool
    """The spec (other than its description) or the code version differs."""
    metrics_changed: bool
    improved: tuple[str, ...]
    """Metrics better in b, by name."""
    worsened: tuple[str, ...]
    text: str
    """The verdict in a sentence."""


@dataclass(frozen=True)
class CompareReport(Report):
    run_a: str
    run_b: str
    model_a: str
    model_b: str
    metrics: Mapping[str, MetricDelta]
    data: tuple[PartitionDiff, ...]
    """Every snapshot partition either run trained on, by asset and partition."""
    spec_changes: tuple[SpecChange, ...]
    code_version: CodeVersions
    rows_train: RunPair
    rows_test: RunPair
    verdict: Verdict


# ---------------------------------------------------------------- reproduce


@dataclass(frozen=True)
class Reproduced(Report):
    """A recorded value (a metric, the test predictions' sha256) against the retrained one."""

    recorded: Any
    reproduced: Any
    identical: bool


@dataclass(frozen=True)
class ReproducedSnapshot(Report):
    """A version the run was retrained on (hash-verified against the lock)."""

    asset: str
    partition: str
    version: str
    rows: int
    verified: bool = True


@dataclass(frozen=True)
class CodeCheck(Report):
    recorded: str | None
    current: str
    same: bool


@dataclass(frozen=True)
class LibraryDifference(Report):
    recorded: str | None
    current: str | None


@dataclass(frozen=True)
class ReproduceReport(Report):
    run_id: str
    model: str
    model_partition: str | None
    identical: bool
    """Every metric and the test predictions are identical."""
    metrics: Mapping[str, Reproduced]
    predictions: Reproduced
    """The sha256 of the test predictions."""
    snapshots: tuple[ReproducedSnapshot, ...]
    storage: str
    code_version: CodeCheck
    library_differences: Mapping[str, LibraryDifference]
    """Only the libraries whose version differs from the run's."""
    allow_failed_checks_reason: str | None
    seconds: float
    """Time taken to retrain (rounded to ms)."""

    @property
    def differing(self) -> list[str]:
        """What is not identical: metric names, and ``predictions``."""
        bad = [k for k, m in self.metrics.items() if not m.identical]
        return bad + ([] if self.predictions.identical else ["predictions"])
