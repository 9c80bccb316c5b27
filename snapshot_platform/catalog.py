"""The catalog: ``snapshots.yaml`` parsed into validated, typed specs.

Everything a run will do is decided here, before any database is touched: unknown keys, a bad
cadence, a missing source, a query without its window parameters, a literal password. Each error
names the file, the entry and the field. Secrets appear in the catalog only as references
(``{env: NAME}``); they are resolved at connection time by the source, never stored in a spec's repr.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from snapshot_platform.sql_params import WINDOW_PARAMS, find_placeholders

CATALOG_ENV = "SNAPSHOT_PLATFORM_CATALOG"
DEMO_CATALOG = Path(__file__).parent / "demo" / "snapshots.yaml"

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,63}$")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,63}(/[A-Za-z0-9_.-]{1,63})?$")


class CatalogError(ValueError):
    """A catalog that cannot be used. The message names the file, the entry and the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- secrets


class EnvRef(_Strict):
    """A value read from an environment variable when a connection opens: ``{env: NAME}``."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    default: str | None = Field(default=None, description="used when the variable is unset (never for secrets)")

    def describe(self) -> str:
        return f"${{{self.env}}}"


SecretRef = EnvRef
SecretOrLiteral = Union[EnvRef, str]


class SecretMissingError(RuntimeError):
    pass


def resolve(value: SecretOrLiteral) -> str:
    """The plain value of a literal or a reference. Errors name the variable, never a value."""
    if isinstance(value, EnvRef):
        got = os.environ.get(value.env)
        if got is None or got == "":
            if value.default is not None:
                return os.path.expanduser(value.default) if value.default.startswith("~") else value.default
            raise SecretMissingError(f"environment variable {value.env} is not set")
        return got
    return value


def _url_has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


# ---------------------------------------------------------------- sources


class _SourceBase(_Strict):
    description: str = ""
    statement_timeout_s: float = Field(default=600, gt=0, le=86_400)
    connect_timeout_s: float = Field(default=10, gt=0, le=600)
    max_concurrent_queries: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=10, description="attempts on transient errors")


class SqliteSourceSpec(_SourceBase):
    kind: Literal["sqlite"]
    path: SecretOrLiteral


class PostgresSourceSpec(_SourceBase):
    kind: Literal["postgres"]
    url: SecretOrLiteral
    fetch_batch_rows: int = Field(default=65_536, ge=1_000, le=4_000_000)

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral) -> SecretOrLiteral:
        literal = v.default if isinstance(v, EnvRef) else v
        if literal and _url_has_password(literal):
            raise ValueError(
                "contains a literal password; put the URL in an environment variable and write "
                "url: {env: NAME}"
            )
        return v


SourceSpec = Annotated[Union[SqliteSourceSpec, PostgresSourceSpec], Field(discriminator="kind")]


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


class ChecksSpec(_Strict):
    min_rows: int = Field(default=1, ge=0)
    schema_change: Literal["warn", "block"] = "warn"
    volume: VolumeCheckSpec = VolumeCheckSpec()
    columns: dict[str, ColumnRules] = {}


class SnapshotSpec(_Strict):
    source: str
    description: str = ""
    query: str = Field(min_length=1)
    partitions: PartitionsSpec
    key: list[str] = Field(min_length=1)
    not_null: list[str] = []
    tags: dict[str, str] = {}
    owners: list[str] = []
    checks: ChecksSpec = ChecksSpec()

    @field_validator("query")
    @classmethod
    def _window_params(cls, q: str) -> str:
        names = [p.name for p in find_placeholders(q)]
        missing = [w for w in WINDOW_PARAMS if w not in names]
        if missing:
            raise ValueError(
                "must use the partition window parameters "
                + " and ".join(f":{m}" for m in missing)
                + " (the half-open window [:partition_start, :partition_end) is bound by the driver)"
            )
        unknown = sorted(set(names) - set(WINDOW_PARAMS))
        if unknown:
            raise ValueError(
                "uses unknown parameters " + ", ".join(f":{u}" for u in unknown)
                + "; only :partition_start and :partition_end are bound"
            )
        return q

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


class Catalog(_Strict):
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SourceSpec]
    snapshots: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SnapshotSpec]
    path: str = Field(default="<memory>", exclude=True)

    def source_of(self, snapshot: str) -> tuple[str, Any]:
        spec = self.snapshots[snapshot]
        return spec.source, self.sources[spec.source]


# ---------------------------------------------------------------- loading


def _field_path(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('snapshots', 'x', 'partitions', 'cadence') -> ('snapshots.x', 'partitions.cadence')."""
    parts = [str(p) for p in loc]
    # discriminated unions put the tag into the location: sources.warehouse.postgres.url
    if len(parts) >= 3 and parts[0] == "sources" and parts[2] in {"sqlite", "postgres"}:
        parts = parts[:2] + parts[3:]
    if parts and parts[0] in {"sources", "snapshots"} and len(parts) >= 2:
        return f"{parts[0]}.{parts[1]}", ".".join(parts[2:]) or "(the entry)"
    return "(top level)", ".".join(parts) or "(document)"


def parse_catalog(data: Any, path: str = "<memory>") -> Catalog:
    """Validate a parsed YAML document; raise :class:`CatalogError` listing every problem."""
    if not isinstance(data, dict):
        raise CatalogError([f"{path}: (document): must be a mapping with 'sources' and 'snapshots'"])
    try:
        catalog = Catalog.model_validate({**data, "path": path})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            entry, field = _field_path(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field (a misspelling? unknown fields are errors, not ignored)"
            elif err["type"] == "union_tag_invalid":
                msg = "unknown kind; supported kinds: sqlite, postgres"
            problems.append(f"{path}: {entry}: field '{field}': {msg}")
        raise CatalogError(problems) from None
    problems = []
    for name, snap in catalog.snapshots.items():
        if snap.source not in catalog.sources:
            known = ", ".join(sorted(catalog.sources)) or "none"
            problems.append(
                f"{path}: snapshots.{name}: field 'source': unknown source {snap.source!r} (known: {known})"
            )
    if problems:
        raise CatalogError(problems)
    return catalog


def catalog_path() -> Path:
    return Path(os.environ.get(CATALOG_ENV) or DEMO_CATALOG)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate the catalog at ``path`` (default: $SNAPSHOT_PLATFORM_CATALOG, else the demo)."""
    p = Path(path) if path is not None else catalog_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{p}: (file): cannot read the catalog: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError([f"{p}: (document): not valid YAML: {exc}"]) from None
    return parse_catalog(data, str(p))
