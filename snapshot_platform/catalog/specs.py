"""The catalog's snapshot and model entries as validated, typed specs (the sources' specs live with
their engines, in :mod:`snapshot_platform.sources`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from snapshot_platform.sources import SNAPSHOT_TIME_KINDS
from snapshot_platform.sources.sql import SNAPSHOT_TIME_PARAM, WINDOW_PARAMS, find_placeholders

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}(/[A-Za-z0-9_.-]{1,63})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- snapshots

Cadence = Literal["hourly", "daily", "weekly", "monthly"]


class PartitionsSpec(_Strict):
    cadence: Cadence
    start: dt.datetime
    end: dt.datetime | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse_time(cls, v: Any) -> Any:
        if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            return dt.datetime(v.year, v.month, v.day)
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            return dt.datetime.fromisoformat(v)
        return v

    @model_validator(mode="after")
    def _order(self) -> "PartitionsSpec":
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ColumnRules(_Strict):
    """Per-column rules, checked on every partition (warnings unless ``blocking``)."""

    accepted_values: list[Union[bool, int, float, str]] | None = None
    min: float | None = None
    max: float | None = None
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)
    blocking: bool = False

    @model_validator(mode="after")
    def _some_rule(self) -> "ColumnRules":
        if self.accepted_values is None and self.min is None and self.max is None and self.max_null_fraction is None:
            raise ValueError("needs at least one of accepted_values, min, max, max_null_fraction")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self

    def describe(self) -> str:
        parts = []
        if self.accepted_values is not None:
            parts.append(f"values in {self.accepted_values}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.max_null_fraction is not None:
            parts.append(f"at most {self.max_null_fraction:.1%} NULL")
        return ", ".join(parts)


class VolumeCheckSpec(_Strict):
    """Row count within ``tolerance`` (a fraction) of the median of the trailing partitions."""

    trailing: int = Field(default=7, ge=1, le=366)
    tolerance: float = Field(default=0.5, gt=0)
    min_history: int = Field(default=3, ge=1, le=366)
    blocking: bool = False


class DriftCheckSpec(_Strict):
    """Each listed column's distribution against the trailing partitions' latest versions (drift.py):
    the population stability index, numeric columns in the trailing data's decile bins, categorical
    ones by category shares; a column whose figure exceeds ``threshold`` fails the check."""

    columns: list[str] = Field(min_length=1)
    trailing: int = Field(default=7, ge=1, le=366)
    threshold: float = Field(default=0.2, gt=0)
    blocking: bool = False

    @field_validator("columns")
    @classmethod
    def _columns(cls, cols: list[str]) -> list[str]:
        return _column_list(cols)


class ChecksSpec(_Strict):
    min_rows: int = Field(default=1, ge=0)
    schema_change: Literal["warn", "block"] = "warn"
    volume: VolumeCheckSpec = VolumeCheckSpec()
    columns: dict[str, ColumnRules] = {}
    drift: DriftCheckSpec | None = None


def query_parameter_problem(q: str, backslash_escapes: bool, mode: str = "window") -> str | None:
    """What is wrong with a query's ``:name`` parameters, read in one dialect; None when nothing.

    ``mode: as_of``: the query reads the state at the partition's end, so it uses ``:partition_end``
    and must not use ``:partition_start``."""
    names = [p.name for p in find_placeholders(q, backslash_escapes)]
    if mode == "as_of":
        if "partition_start" in names:
            return ("uses :partition_start, but mode: as_of reads the state as of the partition's end: "
                    "use :partition_end only (or mode: window for the rows of a window)")
        if "partition_end" not in names:
            return "must use :partition_end (mode: as_of reads the state as of the partition's end)"
        names = [n for n in names if n != "partition_end"]
        unknown = sorted(set(names) - {SNAPSHOT_TIME_PARAM})
        if unknown:
            return ("uses unknown parameters " + ", ".join(f":{u}" for u in unknown)
                    + "; only :partition_end is bound in mode: as_of"
                    + f" (and :{SNAPSHOT_TIME_PARAM} on " + ", ".join(SNAPSHOT_TIME_KINDS) + ")")
        return None
    missing = [w for w in WINDOW_PARAMS if w not in names]
    if missing:
        return (
            "must use the partition window parameters "
            + " and ".join(f":{m}" for m in missing)
            + " (the half-open window [:partition_start, :partition_end) is bound by the driver)"
        )
    unknown = sorted(set(names) - set(WINDOW_PARAMS) - {SNAPSHOT_TIME_PARAM})
    if unknown:
        return (
            "uses unknown parameters " + ", ".join(f":{u}" for u in unknown)
            + "; only :partition_start and :partition_end are bound"
            + f" (and :{SNAPSHOT_TIME_PARAM} on " + ", ".join(SNAPSHOT_TIME_KINDS) + ")"
        )
    return None


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(value: Any) -> dt.timedelta:
    """``90m``, ``6h``, ``1d``, ``30s`` (the CLI's ``--older-than`` form) as a positive timedelta."""
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a positive duration such as 90m, 6h or 1d")
    return dt.timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])


class ChangeProbeSpec(_Strict):
    """A cheap query, bound with the snapshot's window parameters, returning one row that fingerprints
    the partition at the source (e.g. ``count(*), max(updated_at)``); ``changed`` and the change sensor
    compare it with the one recorded at the partition's latest version, over the last ``lookback``
    partitions that have a version."""

    query: str = Field(min_length=1)
    lookback: int = Field(default=7, ge=1, le=366)


class SnapshotSpec(_Strict):
    source: str
    description: str = ""
    mode: Literal["window", "as_of"] = Field(
        default="window",
        description="window: the rows of [:partition_start, :partition_end); as_of: the query's state "
        "as of :partition_end, read in one consistent session")
    max_lag: str | None = Field(
        default=None,
        description="as_of: how long after the partition's end a read may still be taken as its state "
        "(e.g. 6h, 1d; default one cadence period); a later read is refused unless accepted explicitly")
    query: str = Field(min_length=1)
    change_probe: ChangeProbeSpec | None = None
    partitions: PartitionsSpec
    key: list[str] = Field(min_length=1)
    not_null: list[str] = []
    tags: dict[str, str] = {}
    owners: list[str] = []
    columns: dict[str, str] = Field(
        default={}, description="column name -> description, shown in the asset's column schema")
    checks: ChecksSpec = ChecksSpec()

    @field_validator("columns")
    @classmethod
    def _column_descriptions(cls, v: dict[str, str]) -> dict[str, str]:
        for col, text in v.items():
            if not col.strip():
                raise ValueError("a column name is empty")
            if not text.strip():
                raise ValueError(f"column {col!r}: the description is empty")
        return v

    @field_validator("query")
    @classmethod
    def _window_params(cls, q: str, info: Any) -> str:
        # the source's dialect is not known here: a query valid under either way of reading string
        # literals passes, and parse_catalog checks it again with its source's dialect
        problem = _query_problem(q, info.data.get("mode", "window"))
        if problem:
            raise ValueError(problem)
        return q

    @field_validator("change_probe")
    @classmethod
    def _probe_params(cls, v: ChangeProbeSpec | None, info: Any) -> ChangeProbeSpec | None:
        if v is None:
            return v
        problem = _query_problem(v.query, info.data.get("mode", "window"))
        if problem:
            raise ValueError(f"query {problem}")
        return v

    @field_validator("max_lag")
    @classmethod
    def _max_lag(cls, v: str | None, info: Any) -> str | None:
        if v is None:
            return v
        if info.data.get("mode") != "as_of":
            raise ValueError("applies to mode: as_of only")
        parse_duration(v)
        return v

    def max_lag_for(self, window_length: dt.timedelta) -> dt.timedelta:
        """``max_lag``, or one cadence period (the partition's window length) when not given."""
        return parse_duration(self.max_lag) if self.max_lag is not None else window_length

    @field_validator("key", "not_null")
    @classmethod
    def _columns(cls, cols: list[str]) -> list[str]:
        for c in cols:
            if not c or len(c) > 128 or any(ch in c for ch in "\x00\n\r"):
                raise ValueError(f"column name {c!r} is not usable")
        if len(set(cols)) != len(cols):
            raise ValueError("lists a column twice")
        return cols

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for k, v in tags.items():
            if not _TAG_KEY.match(k):
                raise ValueError(f"tag key {k!r} must match [A-Za-z0-9_.-], at most 63 characters")
            if not isinstance(v, str) or not _TAG_VALUE.match(v):
                raise ValueError(f"tag {k!r}: value {v!r} must match [A-Za-z0-9_.-], at most 63 characters")
        return tags


# ---------------------------------------------------------------- models (training assets)

_IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


def _query_problem(q: str, mode: str) -> str | None:
    """What is wrong with a query's parameters, when it is wrong under both ways of reading string
    literals (the source's dialect is not known here; parse_catalog checks again with it)."""
    problem = query_parameter_problem(q, backslash_escapes=False, mode=mode)
    if problem and query_parameter_problem(q, backslash_escapes=True, mode=mode):
        return problem
    return None


def _column_list(cols: list[str]) -> list[str]:
    for c in cols:
        if not c or len(c) > 128 or any(ch in c for ch in "\x00\n\r"):
            raise ValueError(f"column name {c!r} is not usable")
    if len(set(cols)) != len(cols):
        raise ValueError("lists a column twice")
    return cols


class EstimatorSpec(_Strict):
    """A scikit-learn estimator (or a factory returning one, e.g. a pipeline) by import path."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field(alias="class", pattern=_IMPORT_PATH)
    params: dict[str, Any] = {}

    @field_validator("class_path")
    @classmethod
    def _importable(cls, path: str) -> str:
        from snapshot_platform.training.estimator import check_estimator_path

        check_estimator_path(path)  # ValueError names what is wrong
        return path

    @model_validator(mode="after")
    def _constructible(self) -> "EstimatorSpec":
        from snapshot_platform.training.estimator import make_estimator

        make_estimator(self.class_path, self.params)  # unknown or bad params fail here, not at training
        return self


class SplitSpec(_Strict):
    """Train/test split by a stable hash of the ``by`` columns: a row keeps its side across versions."""

    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    by: list[str] | None = Field(default=None, description="default: the snapshot's key")

    @field_validator("by", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("by")
    @classmethod
    def _columns(cls, cols: list[str] | None) -> list[str] | None:
        if cols is not None:
            if not cols:
                raise ValueError("must name at least one column")
            _column_list(cols)
        return cols


_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "r2", "mae", "rmse")
_CLASSIFIER_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1")


class PromoteSpec(_Strict):
    """Promote after training, through the same gate as ``snapshot-platform promote`` (training/promote.py)."""

    alias: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
    metric: Literal[_METRICS] | None = Field(default=None, description="default: the model's primary_metric")

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise ValueError(f"{alias!r} is reserved by MLflow (latest, v<number>)")
        return alias


class ModelSpec(_Strict):
    """A training asset ``models/<name>``: an estimator fitted on pinned versions of one snapshot."""

    snapshot: str
    description: str = ""
    partitions: int = Field(default=1, ge=1, le=10_000,
                            description="model partition P trains on this many snapshot partitions ending with P")
    features: list[str] = Field(min_length=1)
    target: str = Field(min_length=1, max_length=128)
    estimator: EstimatorSpec
    split: SplitSpec = SplitSpec()
    tags: dict[str, str] = {}
    owners: list[str] = []
    primary_metric: Literal[_METRICS] | None = Field(
        default=None, description="what promotion compares (default: roc_auc for classifiers, r2 for regressors)")
    promote: PromoteSpec | None = None

    @field_validator("features")
    @classmethod
    def _features(cls, cols: list[str]) -> list[str]:
        return _column_list(cols)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for k, v in tags.items():
            if not _TAG_KEY.match(k) or not isinstance(v, str) or not _TAG_VALUE.match(v):
                raise ValueError(f"tag {k!r}: key and value must match [A-Za-z0-9_.-], at most 63 characters")
        return tags

    @model_validator(mode="after")
    def _target_apart(self) -> "ModelSpec":
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} is also listed in features")
        if self.split.by and self.target in self.split.by:
            raise ValueError(f"split.by must not contain the target {self.target!r}")
        from snapshot_platform.training.estimator import make_estimator, task_of

        for where, m in (("primary_metric", self.primary_metric), ("promote.metric", self.promote and self.promote.metric)):
            if m is None:
                continue
            task = task_of(make_estimator(self.estimator.class_path, dict(self.estimator.params)))
            if (m in _CLASSIFIER_METRICS) != (task == "classification"):
                raise ValueError(f"{where} {m!r} is not a {task} metric")
        return self

    def spec_json(self) -> dict[str, Any]:
        """The entry as the catalog writes it (``estimator.class``), for logging with a run."""
        d = self.model_dump(mode="json", by_alias=True)
        for k in ("primary_metric", "promote"):  # absent unless set: they change nothing a run computes
            if d.get(k) is None:
                d.pop(k, None)
        return d
