"""Amazon Redshift, read over the PostgreSQL protocol with psycopg 3 and a server-side cursor.

Redshift does not support ``COPY ... TO STDOUT``, so rows travel through a named cursor
(``DECLARE ... CURSOR``) fetched ``fetch_batch_rows`` at a time: memory stays bounded whatever the
result's size. Column types come from the result's type OIDs (and ``NUMERIC`` precision/scale), not
from the values.

Authentication, one of:

- stored credentials: ``url: {env: NAME}`` (``postgresql://user:password@cluster:5439/db``),
  optionally with ``password: {aws_secret: NAME, key: password}``;
- machine identity: ``iam:`` asks ``redshift:GetClusterCredentials`` (boto3, the process's own AWS
  identity) for a temporary database password for ``db_user``, kept in memory and asked again when
  it is about to expire or the login fails.

One session per read: ``statement_timeout`` and ``TimeZone = UTC`` set, then ``BEGIN ISOLATION LEVEL
SERIALIZABLE READ ONLY`` (Redshift's isolation; writes fail), the ordered query with the window
bound server-side as ``timestamptz`` parameters. Redshift has no exportable snapshot id, so
``source_state`` records the session's transaction start and backend pid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from snapshot_platform.secrets import SecretOrLiteral, SecretRef, resolve
from snapshot_platform.sources.base import (
    SourceError,
    SourceSpecBase,
    StrictSpec,
    Window,
    no_literal_password_in_url,
    ordered,
    redact,
    refuse_privileged_role,
    source_url,
)
from snapshot_platform.sources.dbapi import DbapiSource, Opened, Stage, fetched
from snapshot_platform.sources.redshift_types import (
    Inexact,
    arrow_type,
    converter,
    text_for_everything_else,
    type_name,
)
from snapshot_platform.sources.sql import rewrite
from snapshot_platform.sources.sqlstate import AUTH_SQLSTATES, MESSAGES, is_transient, sqlstate_error
from snapshot_platform.sources.urls import secret_fragments

_MESSAGES = {
    **MESSAGES,
    "25001": "the query tried to leave the read-only transaction",
    "28P01": "authentication failed",
    "28000": "authentication failed",
}


class RedshiftIamSpec(StrictSpec):
    """Machine identity: temporary credentials from ``redshift:GetClusterCredentials``."""

    cluster_identifier: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    db_user: str = Field(min_length=1, max_length=128)
    auto_create: bool = False
    db_groups: list[str] = []
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    duration_s: int = Field(default=900, ge=900, le=3600)
    endpoint_url: str | None = Field(default=None, description="a Redshift API endpoint (tests, VPC endpoints)")


class RedshiftSourceSpec(SourceSpecBase):
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
        return no_literal_password_in_url(v)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> "RedshiftSourceSpec":
        if (self.url is None) == (self.iam is None):
            raise ValueError("give either url (stored credentials) or iam (GetClusterCredentials), not both")
        if self.iam is not None and (not self.host or not self.database):
            raise ValueError("iam needs host and database")
        if self.iam is not None and self.password is not None:
            raise ValueError("password is for stored credentials; iam issues its own")
        return self


# ---------------------------------------------------------------- IAM credentials

_iam_lock = threading.Lock()
_iam_cache: dict[tuple, dict[str, Any]] = {}
_REFRESH_MARGIN = dt.timedelta(seconds=60)


def iam_credentials(spec: RedshiftSourceSpec, refresh: bool = False, now: dt.datetime | None = None) -> dict[str, Any]:
    """Temporary ``{user, password, expiration}`` from GetClusterCredentials, in memory only.

    Asked again when ``refresh`` (a failed login) or when the cached ones expire within a minute.
    """
    import boto3
    import botocore.exceptions

    iam = spec.iam
    assert iam is not None
    key = (iam.cluster_identifier, iam.db_user, spec.database, tuple(iam.db_groups), iam.auto_create,
           iam.region, iam.endpoint_url)
    now = now or dt.datetime.now(dt.timezone.utc)
    with _iam_lock:
        cached = _iam_cache.get(key)
        if cached and not refresh and cached["expiration"] - _REFRESH_MARGIN > now:
            return cached
        try:
            client = boto3.session.Session().client(
                "redshift", region_name=iam.region, endpoint_url=iam.endpoint_url
            )
            kwargs: dict[str, Any] = {
                "DbUser": iam.db_user,
                "DbName": spec.database,
                "ClusterIdentifier": iam.cluster_identifier,
                "DurationSeconds": iam.duration_s,
                "AutoCreate": iam.auto_create,
            }
            if iam.db_groups:
                kwargs["DbGroups"] = list(iam.db_groups)
            answer = client.get_cluster_credentials(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise SourceError(
                f"GetClusterCredentials for cluster {iam.cluster_identifier} as {iam.db_user} failed: {code}"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise SourceError(
                f"GetClusterCredentials for cluster {iam.cluster_identifier}: {type(exc).__name__}",
                transient=isinstance(exc, botocore.exceptions.EndpointConnectionError),
            ) from None
        expiration = answer.get("Expiration") or now + dt.timedelta(seconds=iam.duration_s)
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.timezone.utc)
        creds = {"user": answer["DbUser"], "password": answer["DbPassword"], "expiration": expiration}
        _iam_cache[key] = creds
        return creds


def forget_iam_credentials() -> None:
    with _iam_lock:
        _iam_cache.clear()


class RedshiftSource(DbapiSource):
    kind = "redshift"
    serial_reason = ("Redshift has no pg_export_snapshot() / SET TRANSACTION SNAPSHOT, so separate "
                     "connections cannot share one snapshot (and the cluster already spreads the query "
                     "over its slices)")
    spec: RedshiftSourceSpec

    def _conn_params(self, refresh: bool = False) -> dict[str, Any]:
        if self.spec.iam is not None:
            creds = iam_credentials(self.spec, refresh=refresh)
            return {
                "host": self.spec.host,
                "port": self.spec.port,
                "dbname": self.spec.database,
                "user": creds["user"],
                "password": creds["password"],
            }
        assert self.spec.url is not None
        url = resolve(self.spec.url, refresh=refresh)
        parts = source_url(self, self.spec.url, url)  # refuses an ambiguous URL, quoting nothing of it
        password = unquote(parts.password) if parts.password else None
        if self.spec.password is not None:
            password = resolve(self.spec.password, refresh=refresh)
        params: dict[str, Any] = {
            "host": parts.hostname,
            "port": parts.port or self.spec.port,
            "dbname": parts.path.lstrip("/") or None,
            "user": unquote(parts.username) if parts.username else None,
        }
        if password:
            params["password"] = password
        return params

    def describe(self) -> dict[str, Any]:
        if self.spec.iam is not None:
            return {
                "kind": "redshift",
                "host": self.spec.host,
                "port": self.spec.port,
                "database": self.spec.database,
                "auth": "iam",
                "cluster_identifier": self.spec.iam.cluster_identifier,
                "db_user": self.spec.iam.db_user,
            }
        assert self.spec.url is not None
        parts = source_url(self, self.spec.url, resolve(self.spec.url))
        return {
            "kind": "redshift",
            "host": parts.hostname,
            "port": parts.port or self.spec.port,
            "database": parts.path.lstrip("/") or None,
            "auth": "password",
        }

    def _secrets(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(Exception):
            if self.spec.url is not None:
                found += secret_fragments(resolve(self.spec.url))
            if self.spec.password is not None:
                found.append(resolve(self.spec.password))
            if self.spec.iam is not None:
                with _iam_lock:
                    found += [c["password"] for c in _iam_cache.values()]
        return found

    def _privileged_role(self, conn: Any) -> str | None:
        """Refuse a superuser (``pg_user.usesuper``, which Redshift and PostgreSQL both keep) unless
        allow_privileged_role; what source_state records. (Redshift's RBAC roles are not read.)"""
        row = conn.execute("SELECT usesuper FROM pg_user WHERE usename = session_user").fetchone()
        return refuse_privileged_role(self, ["superuser"] if row and row[0] else [])

    def _error(self, exc: BaseException, stage: str) -> SourceError:
        if isinstance(exc, SourceError):
            return SourceError(f"source {self.name} ({stage}): {redact(str(exc), self._secrets())}",
                               transient=exc.transient, code=exc.code)
        sqlstate = getattr(exc, "sqlstate", None)
        text = redact(str(exc).strip(), self._secrets())
        # an unreachable or refusing server fails at once
        transient = is_transient(sqlstate) and stage != "connect"
        return sqlstate_error(self.name, stage, text, sqlstate, _MESSAGES, self.spec.statement_timeout_s, transient)

    def _connect(self, refresh: bool) -> Any:
        import psycopg

        params = self._conn_params(refresh=refresh)
        return psycopg.connect(
            **params,
            connect_timeout=max(2, int(self.spec.connect_timeout_s)),
            sslmode=self.spec.sslmode,
            application_name="snapshot_platform",
            autocommit=True,
        )

    # ------------------------------------------------------------ the read (skeleton: sources/dbapi.py)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg

        return (psycopg.Error,)

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        return (*self._driver_errors(), SourceError)  # SourceError: GetClusterCredentials failed

    def _is_auth_failure(self, exc: BaseException) -> bool:
        import psycopg

        return getattr(exc, "sqlstate", None) in AUTH_SQLSTATES or (
            isinstance(exc, psycopg.OperationalError) and "authentication failed" in str(exc)
        )

    def _secret_refs(self) -> list[Any]:
        return [self.spec.url, self.spec.password]

    def _refreshable(self) -> bool:
        return self.spec.iam is not None or super()._refreshable()

    def _cursor(self, conn: Any) -> Any:
        return None  # the session is set up on the connection; _open declares the server-side cursor

    def _release(self, conn: Any, cur: Any) -> None:
        with contextlib.suppress(Exception):
            conn.rollback()  # ends the transaction, closing the server-side cursor
        with contextlib.suppress(Exception):
            conn.close()

    def _open(self, conn: Any, cur: Any, query: str, window: Window, key: list[str], stage: Stage) -> Opened:
        import psycopg
        from psycopg import sql as pgsql

        text_for_everything_else(conn)
        privileged = self._privileged_role(conn)
        timeout_ms = int(self.spec.statement_timeout_s * 1000)
        conn.execute(pgsql.SQL("SET statement_timeout TO {}").format(pgsql.Literal(timeout_ms)))
        conn.execute("SET TimeZone TO 'UTC'")
        # text of floats that reads back exactly (2: Redshift's maximum; PostgreSQL 12+: shortest exact)
        conn.execute("SET extra_float_digits TO 2")
        conn.execute("SET DateStyle TO 'ISO, MDY'")
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True  # psycopg opens: BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY
        stage.name = "snapshot marker"
        row = conn.execute(
            "SELECT version(), current_user, pg_backend_pid(), now()::timestamptz"
        ).fetchone()
        assert row is not None
        server_version, user, pid, started = row
        state = {
            "engine": "redshift",
            "server_version": server_version,
            "user": user,
            "backend_pid": pid,
            "transaction_start": started.astimezone(dt.timezone.utc).isoformat()
            if isinstance(started, dt.datetime) else str(started),
        }
        if privileged:
            state["privileged_role"] = privileged
        stage.name = "query"
        text, _ = rewrite(ordered(query, key).replace("%", "%%"), lambda n, _i: f"%({n})s::timestamptz")
        named = conn.cursor(name="snapshot_platform_read")
        named.itersize = self.spec.fetch_batch_rows
        named.execute(text, {"partition_start": window.start, "partition_end": window.end})
        description = named.description or []
        schema = pa.schema(
            [pa.field(c.name, arrow_type(c.type_code, c.precision, c.scale), True) for c in description]
        )
        converters = [converter(t) for t in schema.types]
        types = {c.name: type_name(conn, c.type_code) for c in description}
        return Opened(
            schema=schema,
            chunks=fetched(named, self.spec.fetch_batch_rows),
            to_batch=lambda rows: self._batch(rows, schema, converters, types),
            state=state,
            source_types=types,
        )

    def _unfit_errors(self) -> tuple[type[BaseException], ...]:
        return (Inexact, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)

    def _unfit(self, f: pa.Field, db_type: str, values: list[Any], exc: BaseException) -> str:
        if isinstance(exc, Inexact):
            return (f"source {self.name}: column {f.name!r} ({f.type}) holds {exc}, which it cannot hold "
                    f"exactly: cast it in the query ({f.name}::text keeps the server's text) or replace it")
        return f"source {self.name}: column {f.name!r} ({f.type}): {exc}"
