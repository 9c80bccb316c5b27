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
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from snapshot_platform.db_urls import literal_password
from snapshot_platform.db_urls import problem as url_problem
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


class AwsSecretRef(_Strict):
    """A value kept in AWS Secrets Manager: ``{aws_secret: NAME, key: password, region: eu-west-1}``.

    Fetched when a connection opens (``VersionStage=AWSCURRENT``), kept in memory only, and fetched
    again after an authentication failure, so a rotated secret is picked up. ``key`` picks one field
    of a JSON secret (the usual ``{"username": ..., "password": ...}``); without it the whole
    ``SecretString`` is the value.
    """

    aws_secret: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9/_+=.@:-]+$")
    key: str | None = Field(default=None, min_length=1, max_length=256)
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")

    def describe(self) -> str:
        return f"aws-secret:{self.aws_secret}" + (f"#{self.key}" if self.key else "")


SecretRef = Union[EnvRef, AwsSecretRef]
SecretOrLiteral = Union[EnvRef, AwsSecretRef, str]


class SecretMissingError(RuntimeError):
    pass


def resolve(value: SecretOrLiteral, refresh: bool = False) -> str:
    """The plain value of a literal or a reference. Errors name the variable, never a value.

    ``refresh=True`` fetches an AWS secret again instead of using the in-memory copy (after an
    authentication failure: the secret may have been rotated).
    """
    if isinstance(value, AwsSecretRef):
        from snapshot_platform.secrets import fetch_aws_secret

        return fetch_aws_secret(value, refresh=refresh)
    if isinstance(value, EnvRef):
        got = os.environ.get(value.env)
        if got is None or got == "":
            if value.default is not None:
                return os.path.expanduser(value.default) if value.default.startswith("~") else value.default
            raise SecretMissingError(f"environment variable {value.env} is not set")
        return got
    return value


def _url_has_password(url: str) -> bool:
    """A password in the userinfo, a ``?password=`` parameter, or a libpq ``password=`` keyword."""
    return literal_password(url)


# ---------------------------------------------------------------- sources


class _SourceBase(_Strict):
    description: str = ""
    allow_privileged_role: bool = Field(
        default=False,
        description="read even as a superuser or a role that can write (warned on every read); "
        "ignored where the engine's privileges cannot be read (sqlite, bigquery)",
    )
    statement_timeout_s: float = Field(default=600, gt=0, le=86_400)
    connect_timeout_s: float = Field(default=10, gt=0, le=600)
    max_concurrent_queries: int = Field(default=2, ge=1, le=64)
    max_attempts: int = Field(default=3, ge=1, le=10, description="attempts on transient errors")


class SqliteSourceSpec(_SourceBase):
    kind: Literal["sqlite"]
    path: SecretOrLiteral


def _no_literal_password_in_url(v: SecretOrLiteral | None) -> SecretOrLiteral | None:
    literal = v.default if isinstance(v, EnvRef) else v
    if isinstance(literal, str) and literal and _url_has_password(literal):
        raise ValueError(
            "contains a literal password (in the URL's user part, a password= parameter or a keyword "
            "string); put the URL in an environment variable and write url: {env: NAME} (or the "
            "password alone in password: {aws_secret: NAME, key: password})"
        )
    if isinstance(literal, str) and literal:
        found = url_problem(literal)
        if found:
            raise ValueError(found)
    return v


class PostgresSourceSpec(_SourceBase):
    kind: Literal["postgres"]
    url: SecretOrLiteral
    password: SecretRef | None = Field(
        default=None, description="overrides the URL's password: {env: NAME} or {aws_secret: NAME, key: password}"
    )
    max_replica_lag_s: float | None = Field(
        default=None, gt=0, description="refuse to read from a replica whose replay is further behind"
    )

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral) -> SecretOrLiteral:
        return _no_literal_password_in_url(v)


class MySQLSourceSpec(_SourceBase):
    """MySQL or MariaDB: ``url: {env: NAME}`` holding ``mysql://user:password@host:3306/database``."""

    kind: Literal["mysql"]
    url: SecretOrLiteral
    password: SecretRef | None = Field(default=None, description="overrides the URL's password")
    ssl_ca: SecretOrLiteral | None = Field(default=None, description="CA file: TLS with a verified server")
    fetch_batch_rows: int = Field(default=50_000, ge=100, le=4_000_000)

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral) -> SecretOrLiteral:
        return _no_literal_password_in_url(v)


class RedshiftIamSpec(_Strict):
    """Machine identity: temporary credentials from ``redshift:GetClusterCredentials``."""

    cluster_identifier: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    db_user: str = Field(min_length=1, max_length=128)
    auto_create: bool = False
    db_groups: list[str] = []
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    duration_s: int = Field(default=900, ge=900, le=3600)
    endpoint_url: str | None = Field(default=None, description="a Redshift API endpoint (tests, VPC endpoints)")


class RedshiftSourceSpec(_SourceBase):
    """Redshift over the PostgreSQL protocol: stored credentials (``url``) or IAM (``iam``)."""

    kind: Literal["redshift"]
    url: SecretOrLiteral | None = Field(default=None, description="postgresql://user:password@host:5439/db")
    password: SecretRef | None = Field(default=None, description="overrides the URL's password")
    host: str | None = Field(default=None, description="the cluster endpoint (with iam)")
    port: int = Field(default=5439, ge=1, le=65535)
    database: str | None = Field(default=None, description="the database (with iam)")
    iam: RedshiftIamSpec | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "require"
    fetch_batch_rows: int = Field(default=10_000, ge=100, le=1_000_000)

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral | None) -> SecretOrLiteral | None:
        return _no_literal_password_in_url(v)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> "RedshiftSourceSpec":
        if (self.url is None) == (self.iam is None):
            raise ValueError("give either url (stored credentials) or iam (GetClusterCredentials), not both")
        if self.iam is not None and (not self.host or not self.database):
            raise ValueError("iam needs host and database")
        if self.iam is not None and self.password is not None:
            raise ValueError("password is for stored credentials; iam issues its own")
        return self


class BigQuerySourceSpec(_SourceBase):
    """BigQuery: a service account key (file or JSON in a secret) or Application Default Credentials."""

    kind: Literal["bigquery"]
    project: str = Field(pattern=r"^[a-z][a-z0-9:.-]{0,127}$", description="the project that runs (and pays for) the jobs")
    location: str | None = None
    credentials_file: SecretOrLiteral | None = Field(default=None, description="service account key file")
    credentials_json: SecretRef | None = Field(default=None, description="service account key JSON in a secret")
    anonymous: bool = Field(default=False, description="no credentials at all: only for an emulator (api_endpoint)")
    api_endpoint: str | None = Field(default=None, description="REST endpoint (emulators, private endpoints)")
    storage_api: bool = Field(default=True, description="read results through the Storage Read API (Arrow)")
    storage_api_endpoint: str | None = Field(default=None, description="host:port of the Storage Read API")
    maximum_bytes_billed: int = Field(default=10 * 2**30, ge=1, description="a query that would bill more fails")
    window_param_type: Literal["TIMESTAMP", "DATETIME", "DATE"] = "TIMESTAMP"
    fetch_batch_rows: int = Field(default=50_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _credentials(self) -> "BigQuerySourceSpec":
        if self.credentials_file is not None and self.credentials_json is not None:
            raise ValueError("give credentials_file or credentials_json, not both (neither: Application Default Credentials)")
        if self.anonymous and (self.api_endpoint is None or self.credentials_file or self.credentials_json):
            raise ValueError("anonymous is only for an emulator: it needs api_endpoint and no credentials")
        return self


# Snowflake's system-defined roles that own or may grant everything: never a snapshot's role by default
SNOWFLAKE_ADMIN_ROLES = frozenset({"ACCOUNTADMIN", "SECURITYADMIN", "SYSADMIN", "ORGADMIN", "USERADMIN"})


class SnowflakeSourceSpec(_SourceBase):
    """Snowflake: password or key-pair authentication."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["snowflake"]
    account: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,255}$")
    user: SecretOrLiteral
    password: SecretRef | None = None
    private_key: SecretRef | None = Field(default=None, description="PEM private key (key-pair authentication)")
    private_key_file: SecretOrLiteral | None = Field(default=None, description="PEM private key file")
    private_key_passphrase: SecretRef | None = None
    warehouse: str | None = None
    database: str | None = None
    schema_name: str | None = Field(default=None, alias="schema")
    role: str | None = Field(default=None, description="a role that can only SELECT")
    host: str | None = Field(default=None, description="PrivateLink host or an emulator")
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["https", "http"] = "https"

    @model_validator(mode="after")
    def _not_an_admin_role(self) -> "SnowflakeSourceSpec":
        if self.role and self.role.strip('"').upper() in SNOWFLAKE_ADMIN_ROLES and not self.allow_privileged_role:
            raise ValueError(
                f"role {self.role} is a Snowflake administrative role (it can write and grant); use a role "
                "that can only SELECT, or set allow_privileged_role: true (warned on every read)"
            )
        return self

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> "SnowflakeSourceSpec":
        given = [n for n in ("password", "private_key", "private_key_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of password, private_key, private_key_file")
        if self.private_key_passphrase is not None and self.password is not None:
            raise ValueError("private_key_passphrase goes with private_key or private_key_file")
        if self.protocol == "http" and self.host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("protocol http is only for an emulator on this machine")
        return self


SNAPSHOT_TIME_PARAM = "snapshot_time"
SOURCE_KINDS = ("sqlite", "postgres", "mysql", "redshift", "bigquery", "snowflake")
# engines whose queries may pin their tables to the read's start with :snapshot_time
SNAPSHOT_TIME_KINDS = ("bigquery", "snowflake")

SourceSpec = Annotated[
    Union[
        SqliteSourceSpec,
        PostgresSourceSpec,
        MySQLSourceSpec,
        RedshiftSourceSpec,
        BigQuerySourceSpec,
        SnowflakeSourceSpec,
    ],
    Field(discriminator="kind"),
]


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


# engines whose string literals take backslash escapes ('it\'s'): their queries are scanned that way
BACKSLASH_ESCAPE_KINDS = ("mysql", "bigquery", "snowflake")


def query_parameter_problem(q: str, backslash_escapes: bool) -> str | None:
    """What is wrong with a query's ``:name`` parameters, read in one dialect; None when nothing."""
    names = [p.name for p in find_placeholders(q, backslash_escapes)]
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
        # the source's dialect is not known here: a query valid under either way of reading string
        # literals passes, and parse_catalog checks it again with its source's dialect
        problem = query_parameter_problem(q, backslash_escapes=False)
        if problem and query_parameter_problem(q, backslash_escapes=True):
            raise ValueError(problem)
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


# ---------------------------------------------------------------- models (training assets)

_IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


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
        return self

    def spec_json(self) -> dict[str, Any]:
        """The entry as the catalog writes it (``estimator.class``), for logging with a run."""
        return self.model_dump(mode="json", by_alias=True)


class Catalog(_Strict):
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SourceSpec]
    snapshots: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SnapshotSpec]
    models: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ModelSpec] = {}
    path: str = Field(default="<memory>", exclude=True)

    def source_of(self, snapshot: str) -> tuple[str, Any]:
        spec = self.snapshots[snapshot]
        return spec.source, self.sources[spec.source]


# ---------------------------------------------------------------- loading


def _field_path(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('snapshots', 'x', 'partitions', 'cadence') -> ('snapshots.x', 'partitions.cadence')."""
    parts = [str(p) for p in loc]
    # discriminated unions put the tag into the location: sources.warehouse.postgres.url
    if len(parts) >= 3 and parts[0] == "sources" and parts[2] in SOURCE_KINDS:
        parts = parts[:2] + parts[3:]
    if parts and parts[0] in {"sources", "snapshots", "models"} and len(parts) >= 2:
        if parts[2:] == ["[key]"]:
            return f"{parts[0]}.{parts[1]}", "(the entry's name)"
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
            elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                field = "kind"
                msg = ("unknown kind; supported kinds: " if err["type"] == "union_tag_invalid"
                       else "missing; one of: ") + ", ".join(SOURCE_KINDS)
            problems.append(f"{path}: {entry}: field '{field}': {msg}")
        raise CatalogError(problems) from None
    problems = []
    for name, snap in catalog.snapshots.items():
        if snap.source not in catalog.sources:
            known = ", ".join(sorted(catalog.sources)) or "none"
            problems.append(
                f"{path}: snapshots.{name}: field 'source': unknown source {snap.source!r} (known: {known})"
            )
            continue
        kind = catalog.sources[snap.source].kind
        backslash = kind in BACKSLASH_ESCAPE_KINDS
        problem = query_parameter_problem(snap.query, backslash_escapes=backslash)
        if problem:
            problems.append(f"{path}: snapshots.{name}: field 'query': {problem} (read as {kind} SQL)")
        elif SNAPSHOT_TIME_PARAM in {p.name for p in find_placeholders(snap.query, backslash)}:
            if kind not in SNAPSHOT_TIME_KINDS:
                problems.append(
                    f"{path}: snapshots.{name}: field 'query': :{SNAPSHOT_TIME_PARAM} pins tables to the read's "
                    f"start on {', '.join(SNAPSHOT_TIME_KINDS)}; a {kind} source reads one consistent snapshot "
                    "without it"
                )
    for name, model in catalog.models.items():
        if model.snapshot not in catalog.snapshots:
            known = ", ".join(sorted(catalog.snapshots)) or "none"
            problems.append(
                f"{path}: models.{name}: field 'snapshot': unknown snapshot {model.snapshot!r} (known: {known})"
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
        data = load_yaml(text, str(p))
    except yaml.YAMLError as exc:
        raise CatalogError([f"{p}: (document): not valid YAML: {exc}"]) from None
    except RecursionError:
        raise CatalogError([f"{p}: (document): nested too deeply to be a catalog"]) from None
    return parse_catalog(data, str(p))


# libyaml's parser when PyYAML has it (several times faster on big catalogs), else the Python one
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# aliases (*name) may add at most this many nodes, or ten times the nodes written, whichever is more:
# a few anchors shared by many entries pass, a "billion laughs" alias bomb does not
ALIAS_EXPANSION_NODES = 10_000
ALIAS_EXPANSION_FACTOR = 10


def load_yaml(text: str, path: str = "<memory>") -> Any:
    """``yaml.safe_load(text)``, refusing a document whose aliases expand beyond the bound.

    The document is composed first (an alias is one shared node there, so composing a bomb is cheap),
    its expanded size computed, and only then turned into Python objects.
    """
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "*" in text:  # only an alias can expand a document
            _check_alias_expansion(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_alias_expansion(root: yaml.Node, path: str) -> None:
    size: dict[int, int] = {}  # node -> nodes it expands to (itself and everything under it)
    refs: dict[int, int] = {}  # node -> how many places refer to it (more than one: an alias)
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            state[key] = 2
            continue
        if key in state:
            continue
        state[key] = 1
        stack.append((node, True))
        for child in _children(node):
            refs[id(child)] = refs.get(id(child), 0) + 1
            if state.get(id(child)) == 1:
                raise CatalogError([f"{path}: (document): an alias refers to a node that contains it (recursive YAML)"])
            if id(child) not in state:
                stack.append((child, False))
    written, expanded = len(state), size[id(root)]
    limit = written + max(ALIAS_EXPANSION_NODES, ALIAS_EXPANSION_FACTOR * written)
    if expanded <= limit:
        return
    # name where it happens: follow the biggest expansion down to the first aliased node
    keys: list[str] = []
    node = root
    while _children(node):
        if isinstance(node, yaml.MappingNode):
            k, node = max(node.value, key=lambda kv: size[id(kv[1])])
            keys.append(str(k.value) if isinstance(k, yaml.ScalarNode) else "?")
        else:
            i, child = max(enumerate(node.value), key=lambda iv: size[id(iv[1])])
            if refs.get(id(child), 0) > 1:  # the list of aliases is the field to name
                break
            keys.append(str(i))
            node = child
        if refs.get(id(node), 0) > 1:
            break
    entry, field = _field_path(tuple(keys))
    raise CatalogError([
        f"{path}: {entry}: field '{field}': YAML aliases expand the catalog to {expanded:,} nodes from "
        f"{written:,} written (at most {limit:,}); write the values out instead of nesting aliases"
    ])
