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
import json
import re
import threading
from typing import Any, Callable, Iterator
from urllib.parse import unquote

import pyarrow as pa

from snapshot_platform.catalog import RedshiftSourceSpec, SecretMissingError, resolve
from snapshot_platform.db_urls import secret_fragments
from snapshot_platform.secrets import aws_refs
from snapshot_platform.sources.base import (
    Source,
    SourceError,
    SourceRead,
    Window,
    ordered,
    redact,
    refuse_privileged_role,
    source_url,
    with_secret_refresh,
)
from snapshot_platform.sources.postgres import TRANSIENT_CLASSES, TRANSIENT_SQLSTATES
from snapshot_platform.sql_params import rewrite

AUTH_SQLSTATES = {"28P01", "28000"}
_MESSAGES = {
    "57014": "cancelled by the statement timeout ({timeout:g}s)",
    "25006": "the query tried to write; snapshot sessions are read-only",
    "25001": "the query tried to leave the read-only transaction",
    "42501": "permission denied",
    "28P01": "authentication failed",
    "28000": "authentication failed",
}

# type OIDs decoded natively; everything else arrives as the server's text
_BOOL, _INT8, _INT2, _INT4, _OID, _FLOAT4, _FLOAT8, _NUMERIC = 16, 20, 21, 23, 26, 700, 701, 1700
_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ, _BYTEA = 1082, 1083, 1114, 1184, 17
_NATIVE = {
    _BOOL: pa.bool_(),
    _INT8: pa.int64(),
    _INT2: pa.int16(),
    _INT4: pa.int32(),
    _OID: pa.int64(),
    _FLOAT4: pa.float32(),
    _FLOAT8: pa.float64(),
    _DATE: pa.date32(),
    _TIME: pa.time64("us"),
    _TIMESTAMP: pa.timestamp("us"),
    _TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    _BYTEA: pa.binary(),
}


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> pa.DataType:
    if type_code == _NUMERIC:
        if precision is None or precision <= 0 or scale is None:
            return pa.string()  # unconstrained NUMERIC: exact as text
        if scale < 0 or scale > precision:
            return pa.string()
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    return _NATIVE.get(type_code, pa.string())


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


class RedshiftSource(Source):
    kind = "redshift"
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
        transient = bool(sqlstate) and (sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_CLASSES)
        if stage == "connect":
            transient = False  # an unreachable or refusing server fails at once
        hint = _MESSAGES.get(sqlstate or "", "")
        if hint:
            hint = hint.format(timeout=self.spec.statement_timeout_s) + ": "
        return SourceError(
            f"source {self.name} ({stage}): {hint}{text}" + (f" [SQLSTATE {sqlstate}]" if sqlstate else ""),
            transient=transient,
            code=sqlstate,
        )

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

    @contextlib.contextmanager
    def read(self, query: str, window: Window, key: list[str]) -> Iterator[SourceRead]:
        import psycopg
        from psycopg import sql as pgsql

        def auth_failure(exc: BaseException) -> bool:
            return getattr(exc, "sqlstate", None) in AUTH_SQLSTATES or (
                isinstance(exc, psycopg.OperationalError) and "authentication failed" in str(exc)
            )

        try:
            conn = with_secret_refresh(
                self._connect,
                auth_failure,
                refreshable=self.spec.iam is not None or bool(aws_refs(self.spec.url, self.spec.password)),
            )
        except (psycopg.Error, SourceError) as exc:
            raise self._error(exc, "connect") from None
        except SecretMissingError as exc:
            raise SourceError(f"source {self.name} (connect): {exc}") from None
        stage = "session setup"
        try:
            _text_for_everything_else(conn)
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
            stage = "snapshot marker"
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
            stage = "query"
            text, _ = rewrite(ordered(query, key).replace("%", "%%"), lambda n, _i: f"%({n})s::timestamptz")
            cur = conn.cursor(name="snapshot_platform_read")
            cur.itersize = self.spec.fetch_batch_rows
            cur.execute(text, {"partition_start": window.start, "partition_end": window.end})
            description = cur.description or []
            schema = pa.schema(
                [pa.field(c.name, arrow_type(c.type_code, c.precision, c.scale), True) for c in description]
            )
            converters = [_converter(t) for t in schema.types]
            batch_rows = self.spec.fetch_batch_rows

            def batches() -> Iterator[pa.RecordBatch]:
                while True:
                    try:
                        rows = cur.fetchmany(batch_rows)
                    except psycopg.Error as exc:
                        raise self._error(exc, "streaming rows") from None
                    if not rows:
                        return
                    yield self._batch(rows, schema, converters)

            yield SourceRead(schema=schema, batches=batches(), params=window.as_params(), state=state,
                             source_types={c.name: _type_name(conn, c.type_code) for c in description})
        except psycopg.Error as exc:
            raise self._error(exc, stage) from None
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()

    def _batch(self, rows: list[tuple], schema: pa.Schema, converters: list[Callable[[Any], Any] | None]) -> pa.RecordBatch:
        arrays = []
        for i, (f, conv) in enumerate(zip(schema, converters)):
            values = [r[i] for r in rows]
            if conv is not None:
                try:
                    values = [None if v is None else conv(v) for v in values]
                except _Inexact as exc:
                    raise SourceError(
                        f"source {self.name}: column {f.name!r} ({f.type}) holds {exc}, which it cannot hold "
                        f"exactly: cast it in the query ({f.name}::text keeps the server's text) or replace it"
                    ) from None
            try:
                arrays.append(pa.array(values, type=f.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise SourceError(f"source {self.name}: column {f.name!r} ({f.type}): {exc}") from None
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _decimal_text(v: Any) -> str:
    return format(v, "f") if hasattr(v, "as_tuple") and v.is_finite() else str(v)


class _Inexact(ValueError):
    """A value the column's Arrow type cannot hold (its text is the message)."""


# dates and times travel as the server's ISO text (DateStyle ISO, TimeZone UTC) and become day and
# microsecond counts here: Python's datetime stops at year 9999 and knows no BC, Arrow's types do not
_ISO = re.compile(r"(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:\+00(?::00)?)?)?( BC)?")
_CLOCK = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _temporal(text: str, with_time: bool) -> int:
    m = _ISO.fullmatch(text)
    if m is None or (m.group(4) is None) == with_time:
        raise _Inexact(repr(text))
    year = int(m.group(1))
    days = _days_from_civil(1 - year if m.group(8) else year, int(m.group(2)), int(m.group(3)))
    if not with_time:
        return days
    us = ((int(m.group(4)) * 60 + int(m.group(5))) * 60 + int(m.group(6))) * 1_000_000
    us += days * 86_400_000_000 + int((m.group(7) or "0").ljust(6, "0"))
    if us >= 2**63:
        raise _Inexact(repr(text))  # after 294247-01-10: beyond an int64 count of microseconds
    return us


def _clock(text: str) -> int:
    m = _CLOCK.fullmatch(text)
    us = None if m is None else (
        ((int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))) * 1_000_000
        + int((m.group(4) or "0").ljust(6, "0")))
    if us is None or us >= 86_400_000_000:
        raise _Inexact(repr(text))  # 24:00:00: an Arrow time is within one day
    return us


def _converter(t: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_date32(t):
        return lambda v: _temporal(v, False)
    if pa.types.is_timestamp(t):
        return lambda v: _temporal(v, True)
    if pa.types.is_time64(t):
        return _clock
    if pa.types.is_string(t):
        return lambda v: v if isinstance(v, str) else (_decimal_text(v) if hasattr(v, "as_tuple") else (
            json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    if pa.types.is_binary(t):
        return bytes
    return None


def _text_for_everything_else(conn: Any) -> None:
    """Load every type we do not decode natively as the server's own text (json, interval, arrays,
    uuid, Redshift's SUPER...), so nothing is reinterpreted by Python on the way."""
    from psycopg.adapt import Loader
    from psycopg.postgres import types as builtins

    class _Text(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode("utf-8")

    native = (set(_NATIVE) | {_NUMERIC}) - {_DATE, _TIME, _TIMESTAMP, _TIMESTAMPTZ}
    for info in builtins:
        if info.oid not in native:
            conn.adapters.register_loader(info.oid, _Text)
        if getattr(info, "array_oid", 0):
            conn.adapters.register_loader(info.array_oid, _Text)


def _type_name(conn: Any, oid: int) -> str:
    """The database's name of a result type (``date``, ``super``...), from psycopg's registry of
    built-in types, else ``oid <n>`` (Redshift's own types: SUPER, VARBYTE, GEOMETRY...)."""
    from psycopg.postgres import types as builtins

    info = builtins.get(oid)
    return info.name if info is not None else f"oid {oid}"
