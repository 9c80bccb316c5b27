"""Snowflake, with snowflake-connector-python; results as Arrow batches (``fetch_arrow_batches``).

Authentication: a password, or a key pair (``private_key`` PEM in a secret, or ``private_key_file``,
with an optional ``private_key_passphrase``). Any of them may be ``{env: ...}`` or
``{aws_secret: ...}``; after a failed login an AWS secret is fetched once more (rotation).

One session per read, with ``STATEMENT_TIMEOUT_IN_SECONDS`` (the server cancels a longer query),
``TIMEZONE = UTC`` and a ``QUERY_TAG``; ``login_timeout`` bounds the connection. The window is bound
server-side (``qmark`` binding, typed ``TIMESTAMP_NTZ`` holding UTC, which the session's UTC time
zone makes the same instant for every timestamp and date column). A query may pin its tables to the read's
start with ``AT(TIMESTAMP => :snapshot_time::TIMESTAMP_LTZ)``: the source reads the server's
``CURRENT_TIMESTAMP()`` first and binds it, and records it as ``source_state.snapshot_time``;
a ``mode: as_of`` snapshot's ``pin_at`` (the partition's end) is bound instead once that time has
passed it, and an end beyond the tables' retention (error 707) fails once (``beyond_time_travel``).
The query id (``sfqid``) is recorded too: Snowflake keeps it in ``QUERY_HISTORY``, and its result
can be fetched again for a day. Snowflake has no read-only session: give the source a role that
can only SELECT (``role:``).

The Arrow schema comes from the result metadata (type code, precision, scale), and every batch is
checked against it (:mod:`snapshot_platform.sources.exact`): ``NUMBER(p,0)`` is ``int64`` up to 18
digits, ``decimal128(p,0)`` above; ``NUMBER(p,s)`` is ``decimal128(p,s)`` (the connector is asked
for decimals, ``arrow_number_to_decimal``: by default it turns scaled numbers into float64);
``TIMESTAMP_NTZ`` a naive timestamp; ``TIMESTAMP_LTZ`` and ``_TZ`` instants in UTC, in nanoseconds
for a scale above 6 (a value outside 1677..2262 then fails, naming the column); ``VARIANT``,
``OBJECT``, ``ARRAY`` and ``GEOGRAPHY``/``GEOMETRY`` as the server's text (``JSON_INDENT`` and the
geospatial output formats are pinned to Snowflake's defaults, so that text does not depend on the
account's settings). Types with no exact Arrow form (``VECTOR``, ``MAP``, ``FILE``, intervals,
anything unknown) fail before a row is read, naming the column. Each column's Snowflake type is
``SourceRead.source_types``, recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from typing import Any, Iterator, Literal

import pyarrow as pa
from pydantic import ConfigDict, Field, model_validator

from snapshot_platform.secrets import SecretOrLiteral, SecretRef, resolve
from snapshot_platform.sources.base import (SourceError, SourceSpecBase, Window, beyond_time_travel, ordered, redact,
                                            refuse_future_pin, refuse_privileged_role)
from snapshot_platform.sources.dbapi import DbapiSource, Opened, Stage
from snapshot_platform.sources.exact import conform_exact
from snapshot_platform.sources.sql import SNAPSHOT_TIME_PARAM, find_placeholders, rewrite

# Snowflake's system-defined roles that own or may grant everything: never a snapshot's role by default
SNOWFLAKE_ADMIN_ROLES = frozenset({"ACCOUNTADMIN", "SECURITYADMIN", "SYSADMIN", "ORGADMIN", "USERADMIN"})


class SnowflakeSourceSpec(SourceSpecBase):
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


AUTH_ERRNOS = {390100, 390144, 390191, 251005, 251006}
TIMEOUT_ERRNOS = {630, 604}
PERMISSION_ERRNOS = {3001, 3003, 2003, 2043}
TRANSIENT_ERRNOS = {390114, 250003, 250005, 254003}

# snowflake.connector.constants.FIELD_TYPES, by index
_FIXED, _REAL, _TEXT, _DATE, _TIMESTAMP, _VARIANT, _TS_LTZ, _TS_TZ, _TS_NTZ = range(9)
_OBJECT, _ARRAY, _BINARY, _TIME, _BOOLEAN = 9, 10, 11, 12, 13


def _unit(scale: int | None) -> str:
    return "ns" if (scale or 0) > 6 else "us"


_TEXT_TYPES = {_TEXT: "VARCHAR", _VARIANT: "VARIANT", _OBJECT: "OBJECT", _ARRAY: "ARRAY", 14: "GEOGRAPHY",
               15: "GEOMETRY"}
_TIMESTAMPS = {_TIMESTAMP: "TIMESTAMP_NTZ", _TS_NTZ: "TIMESTAMP_NTZ", _TS_LTZ: "TIMESTAMP_LTZ", _TS_TZ: "TIMESTAMP_TZ"}
_INEXACT_HINT = "select it as text in the query (TO_VARCHAR({column})) or cast it to a type that has one"
_CONFORM_HINT = ("cast it in the query (a timestamp outside 1677..2262 as TIMESTAMP_NTZ(6) or _TZ(6), "
                 "anything else with TO_VARCHAR({column}))")


def type_name(type_code: int, precision: int | None, scale: int | None) -> str:
    """Snowflake's name of a result column's type (``NUMBER(38,0)``, ``TIMESTAMP_TZ(9)``, ``VARIANT``)."""
    if type_code == _FIXED:
        return f"NUMBER({precision or 38},{scale or 0})"
    if type_code in _TIMESTAMPS:
        return f"{_TIMESTAMPS[type_code]}({9 if scale is None else scale})"
    if type_code == _TIME:
        return f"TIME({9 if scale is None else scale})"
    if type_code in _TEXT_TYPES:
        return _TEXT_TYPES[type_code]
    from snowflake.connector.constants import FIELD_TYPES

    return FIELD_TYPES[type_code].name if 0 <= type_code < len(FIELD_TYPES) else f"type code {type_code}"


def arrow_type(type_code: int, precision: int | None, scale: int | None) -> pa.DataType | None:
    """The exact Arrow type of a result column, or ``None`` where Snowflake's type has none."""
    if type_code == _FIXED:
        p, s = precision or 38, scale or 0
        if s == 0:
            return pa.int64() if p <= 18 else pa.decimal128(p, 0)
        return pa.decimal128(p, s)
    if type_code == _REAL:
        return pa.float64()
    if type_code == _DATE:
        return pa.date32()
    if type_code in (_TIMESTAMP, _TS_NTZ):
        return pa.timestamp(_unit(scale))
    if type_code in (_TS_LTZ, _TS_TZ):
        return pa.timestamp(_unit(scale), tz="UTC")
    if type_code == _TIME:
        return pa.time64(_unit(scale))
    if type_code == _BOOLEAN:
        return pa.bool_()
    if type_code == _BINARY:
        return pa.binary()
    if type_code in _TEXT_TYPES:
        return pa.string()  # VARCHAR; VARIANT, OBJECT, ARRAY, GEOGRAPHY, GEOMETRY: the server's text
    return None  # VECTOR, MAP, FILE, INTERVAL_*, DECFLOAT, anything newer: no exact form known here


class SnowflakeSource(DbapiSource):
    kind = "snowflake"
    serial_reason = ("separate Snowflake sessions share a point in time only through time travel on every "
                     "table (AT(TIMESTAMP => ...)), which the query would have to spell; the warehouse "
                     "already runs the query in parallel and the connector fetches its result chunks in "
                     "parallel")
    spec: SnowflakeSourceSpec

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "snowflake",
            "host": self.spec.host or f"{self.spec.account}.snowflakecomputing.com",
            "account": self.spec.account,
            "database": self.spec.database,
            "schema": self.spec.schema_name,
            "warehouse": self.spec.warehouse,
            "role": self.spec.role,
            "auth": "password" if self.spec.password is not None else "key_pair",
        }

    def _secret_values(self) -> list[str]:
        found: list[str] = []
        for ref in (self.spec.password, self.spec.private_key, self.spec.private_key_passphrase):
            if ref is not None:
                with contextlib.suppress(Exception):
                    found.append(resolve(ref))
        return found

    def _private_key(self, refresh: bool) -> bytes | None:
        if self.spec.private_key is None and self.spec.private_key_file is None:
            return None
        from cryptography.hazmat.primitives import serialization

        if self.spec.private_key is not None:
            pem = resolve(self.spec.private_key, refresh=refresh).encode()
        else:
            assert self.spec.private_key_file is not None
            with open(resolve(self.spec.private_key_file), "rb") as fh:
                pem = fh.read()
        passphrase = (
            resolve(self.spec.private_key_passphrase, refresh=refresh).encode()
            if self.spec.private_key_passphrase is not None else None
        )
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except (ValueError, TypeError):
            raise SourceError(f"source {self.name}: the private key cannot be read (not PEM, or a wrong passphrase)") from None
        return key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def _connect(self, refresh: bool) -> Any:
        import snowflake.connector

        kwargs: dict[str, Any] = {
            "account": self.spec.account,
            "user": resolve(self.spec.user),
            "login_timeout": self.spec.connect_timeout_s,
            "network_timeout": self.spec.statement_timeout_s + 60,
            # NUMBER(p,s>0) as decimal128, never float64 (the connector's default would round them)
            "arrow_number_to_decimal": True,
            "paramstyle": "qmark",
            "autocommit": True,
            "client_session_keep_alive": False,
            "session_parameters": {
                "STATEMENT_TIMEOUT_IN_SECONDS": max(1, int(self.spec.statement_timeout_s)),
                "TIMEZONE": "UTC",
                "QUERY_TAG": "snapshot_platform",
                "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
                # the text of VARIANT/OBJECT/ARRAY and geospatial values, pinned to Snowflake's defaults
                # so that an account's own setting cannot change a snapshot's bytes (docs/sources.md)
                "JSON_INDENT": 2,
                "GEOGRAPHY_OUTPUT_FORMAT": "GeoJSON",
                "GEOMETRY_OUTPUT_FORMAT": "GeoJSON",
            },
        }
        for name in ("warehouse", "database", "role"):
            if getattr(self.spec, name):
                kwargs[name] = getattr(self.spec, name)
        if self.spec.schema_name:
            kwargs["schema"] = self.spec.schema_name
        if self.spec.host:
            kwargs["host"] = self.spec.host
        if self.spec.port:
            kwargs["port"] = self.spec.port
        kwargs["protocol"] = self.spec.protocol
        if self.spec.password is not None:
            kwargs["password"] = resolve(self.spec.password, refresh=refresh)
        else:
            kwargs["private_key"] = self._private_key(refresh)
            kwargs["authenticator"] = "SNOWFLAKE_JWT"
        return snowflake.connector.connect(**kwargs)

    def _privileged_role(self, cur: Any) -> str | None:
        """Refuse a session whose primary or secondary roles include a system administrative role
        (ACCOUNTADMIN, SECURITYADMIN, SYSADMIN, ORGADMIN, USERADMIN) unless allow_privileged_role.

        Snowflake has no read-only session, so the role is the only boundary. Grants of custom roles
        are not read (SHOW GRANTS needs more privileges than a reader should have)."""
        import json

        cur.execute("SELECT CURRENT_ROLE()")
        roles = [str((cur.fetchone() or [""])[0] or "")]
        with contextlib.suppress(Exception):  # {"roles": "A,B", "value": ""}; not every server has it
            cur.execute("SELECT CURRENT_SECONDARY_ROLES()")
            roles += str(json.loads((cur.fetchone() or ["{}"])[0] or "{}").get("roles") or "").split(",")
        found = sorted({r.strip().strip('"').upper() for r in roles} & SNOWFLAKE_ADMIN_ROLES)
        return refuse_privileged_role(self, [f"role {r}" for r in found])

    def _error(self, exc: BaseException, stage: str) -> SourceError:
        if isinstance(exc, SourceError):
            return exc
        errno = getattr(exc, "errno", None)
        raw = getattr(exc, "raw_msg", None) or getattr(exc, "msg", None) or str(exc)
        text = redact(str(raw).strip(), self._secret_values())
        transient = False
        if errno in TIMEOUT_ERRNOS:
            hint = f"cancelled by the statement timeout ({self.spec.statement_timeout_s:g}s): "
        elif errno in AUTH_ERRNOS or "incorrect username or password" in text.lower():
            hint = "authentication failed: "
        elif errno in PERMISSION_ERRNOS:
            hint = "permission denied (or no such object): "
        else:
            hint = ""
            transient = errno in TRANSIENT_ERRNOS and stage != "connect"
        return SourceError(
            f"source {self.name} ({stage}): {hint}{text}" + (f" [errno {errno}]" if errno else ""),
            transient=transient,
            code=str(errno) if errno is not None else None,
        )

    # ------------------------------------------------------------ the read (skeleton: sources/dbapi.py)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import snowflake.connector.errors as sferr

        return (sferr.Error,)

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        return (*self._driver_errors(), OSError)

    def _is_auth_failure(self, exc: BaseException) -> bool:
        return getattr(exc, "errno", None) in AUTH_ERRNOS or "incorrect username or password" in str(exc).lower()

    def _secret_refs(self) -> list[Any]:
        return [self.spec.password, self.spec.private_key, self.spec.private_key_passphrase]

    def _open(self, conn: Any, cur: Any, query: str, window: Window, key: list[str], stage: Stage,
              pin_at: dt.datetime | None = None) -> Opened:
        privileged = self._privileged_role(cur)
        stage.name = "snapshot marker"
        cur.execute("SELECT CURRENT_TIMESTAMP(), CURRENT_VERSION()")
        now, version = cur.fetchone()
        pinned = any(p.name == SNAPSHOT_TIME_PARAM for p in find_placeholders(query, backslash_escapes=True))
        at = now  # the instant :snapshot_time binds: the read's start, or (mode: as_of) the partition's end
        if pinned and pin_at is not None:
            refuse_future_pin(self.name, pin_at, now)
            at = pin_at.astimezone(dt.timezone.utc)
        stage.name = "query"
        sql, names = rewrite(ordered(query, key, quote=_quote), lambda _n, _i: "?", backslash_escapes=True)
        # bound server-side as TIMESTAMP_NTZ holding UTC wall time: with the session's TIMEZONE = UTC,
        # Snowflake compares it with DATE, TIMESTAMP_NTZ, _LTZ and _TZ columns as the UTC instant
        values = {
            "partition_start": _utc_wall(window.start),
            "partition_end": _utc_wall(window.end),
            SNAPSHOT_TIME_PARAM: _utc_wall(at),
        }
        try:
            cur.execute(sql, [("TIMESTAMP_NTZ", values[n]) for n in names],
                        timeout=int(self.spec.statement_timeout_s) + 5)
        except self._driver_errors() as exc:
            if at is not now and _beyond_time_travel(exc):
                raise beyond_time_travel(
                    self.name, at, "the tables' DATA_RETENTION_TIME_IN_DAYS: 1 day by default, up to 90 on "
                    "Enterprise Edition", self._error(exc, "query").args[0]) from None
            raise
        source_types = {c.name: type_name(c.type_code, c.precision, c.scale) for c in cur.description}
        fields = []
        for c in cur.description:
            t = arrow_type(c.type_code, c.precision, c.scale)
            if t is None:
                raise SourceError(
                    f"source {self.name}: column {c.name} is a Snowflake {source_types[c.name]}, which has "
                    f"no exact Arrow type here; " + _INEXACT_HINT.format(column=c.name),
                    code="inexact_type",
                )
            fields.append(pa.field(c.name, t, True))
        schema = pa.schema(fields)
        state = {
            "engine": "snowflake",
            "query_id": cur.sfqid,
            "server_version": version,
            "snapshot_time": at.astimezone(dt.timezone.utc).isoformat() if isinstance(at, dt.datetime) else str(at),
            "pinned": pinned,
            **({"server_time": now.astimezone(dt.timezone.utc).isoformat()} if at is not now else {}),
            **({"privileged_role": privileged} if privileged else {}),
        }

        def chunks() -> Iterator[pa.RecordBatch]:  # fetched when the first batch is pulled
            for table in cur.fetch_arrow_batches():
                yield from (b for b in table.to_batches() if b.num_rows)

        return Opened(
            schema=schema,
            chunks=chunks(),
            to_batch=lambda b: conform_exact(b, schema, self.name, "Snowflake", source_types, _CONFORM_HINT),
            state=state,
            source_types=source_types,
        )


def _beyond_time_travel(exc: BaseException) -> bool:
    """Snowflake's refusal of an ``AT(TIMESTAMP => ...)`` older than the table's retention (or its
    creation): error 707, ``Time travel data is not available for table ...``."""
    return getattr(exc, "errno", None) == 707 or "time travel data is not available" in str(exc).lower()


def _utc_wall(t: Any) -> dt.datetime:
    if not isinstance(t, dt.datetime):
        raise SourceError(f"the server's CURRENT_TIMESTAMP() came back as {type(t).__name__}, not a timestamp")
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _quote(name: str) -> str:
    """A plain name stays unquoted, so Snowflake resolves it as usual (``id`` is the column ``ID``);
    anything else is a quoted (case-sensitive) identifier."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,254}", name):
        return name
    return '"' + name.replace('"', '""') + '"'


