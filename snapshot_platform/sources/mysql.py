"""MySQL and MariaDB, read through PyMySQL's unbuffered (streaming) cursor.

One session per read:

1. ``time_zone = '+00:00'`` (``TIMESTAMP`` values and ``NOW()`` in UTC), ``REPEATABLE READ``,
   ``SET SESSION TRANSACTION READ ONLY`` and the statement timeout (MariaDB ``max_statement_time``
   in seconds, MySQL ``MAX_EXECUTION_TIME`` in milliseconds), each value bound by the driver;
2. ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``: every statement after it reads one
   InnoDB snapshot, and any write in it fails (error 1792);
3. the engine's marker of that point in time as ``source_state``: the GTID position (MariaDB
   ``@@gtid_current_pos``, MySQL ``@@global.gtid_executed``) and, on MariaDB, the binlog file and
   position that belong to the snapshot (``binlog_snapshot_file``/``_position``), where the server
   writes a binlog;
4. the ordered query, ``:partition_start``/``:partition_end`` rewritten to the driver's
   ``%(name)s`` and bound as naive UTC datetimes, streamed with ``fetchmany`` in bounded batches.

Arrow types come from the result metadata (type code, length, scale, flags, character set), never
from the values: ``DECIMAL(p,s)`` is ``decimal128(p,s)`` (``decimal256`` above 38 digits),
``DATETIME`` a naive timestamp (wall clock, as stored), ``TIMESTAMP`` an instant in UTC, ``TIME`` a
duration (MySQL's TIME spans ±838 hours), ``BIT`` an unsigned integer, unsigned integers unsigned,
binary strings binary. Each column's database type, as the metadata names it (``FLOAT``,
``BIGINT UNSIGNED``, ``DECIMAL(20,4)``), is the read's ``source_types``.

Every value is exact or the read fails naming the column, its database type and the fix. The text
protocol prints a ``FLOAT`` with 6 significant digits (16777216 comes as ``1.67772e7``) and a
``FLOAT(M,D)``/``DOUBLE(M,D)`` with D decimals: a first ``LIMIT 0`` run of the query (in the same
snapshot; the server does not execute it) gives the metadata, and such columns are then selected
as ``CAST(col AS DOUBLE)``, which the server prints with the 17 digits that round-trip, and stored
as ``float32`` (checked bit for bit). A zero date (``0000-00-00``, ``2024-00-10``) has no Arrow
value: the read fails naming the column (``NULLIF`` it, or ``CAST`` it to ``CHAR``, in the query).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import pyarrow as pa
from pydantic import Field, field_validator

from snapshot_platform.secrets import SecretOrLiteral, SecretRef, resolve
from snapshot_platform.sources.base import (
    SourceError,
    SourceSpecBase,
    Window,
    fingerprint_of,
    no_literal_password_in_url,
    ordered,
    redact,
    refuse_privileged_role,
    source_url,
)
from snapshot_platform.sources.dbapi import DbapiSource, Opened, Stage, fetched
from snapshot_platform.sources.mysql_types import arrow_type, converter, needs_double, source_type
from snapshot_platform.sources.sql import rewrite
from snapshot_platform.sources.urls import secret_fragments


class MySQLSourceSpec(SourceSpecBase):
    """MySQL or MariaDB: ``url: {env: NAME}`` holding ``mysql://user:password@host:3306/database``."""

    kind: Literal["mysql"]
    url: SecretOrLiteral
    password: SecretRef | None = Field(default=None, description="overrides the URL's password")
    ssl_ca: SecretOrLiteral | None = Field(default=None, description="CA file: TLS with a verified server")
    fetch_batch_rows: int = Field(default=50_000, ge=100, le=4_000_000)

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, v: SecretOrLiteral) -> SecretOrLiteral:
        return no_literal_password_in_url(v)


# privileges that only read (or watch the server): anything else on the schema, its tables or globally
# (INSERT, UPDATE, CREATE, FILE, SUPER, CONNECTION ADMIN, ...) makes the user privileged
_READ_PRIVILEGES = frozenset({
    "SELECT", "SHOW VIEW", "USAGE", "SHOW DATABASES", "PROCESS", "REPLICATION CLIENT", "BINLOG MONITOR",
    "SLAVE MONITOR", "REPLICA MONITOR", "EXECUTE", "CREATE TEMPORARY TABLES", "SHOW CREATE ROUTINE",
})

# error codes after which a fresh attempt from the partition's start may succeed
TRANSIENT_CODES = {
    1205,  # lock wait timeout
    1213,  # deadlock
    1053,  # server shutdown in progress
    1927,  # connection killed (MariaDB)
    2006,  # server has gone away
    2013,  # lost connection during query
    1040,  # too many connections
}
AUTH_CODES = {1045, 1698}  # access denied (wrong password, unknown user)
TIMEOUT_CODES = {1969, 3024}  # MariaDB max_statement_time, MySQL MAX_EXECUTION_TIME
_MESSAGES = {
    1792: "the query tried to write; snapshot sessions are read-only",
    1142: "permission denied",
    1143: "permission denied",
    1044: "permission denied",
    1227: "permission denied",
    1045: "authentication failed",
    1698: "authentication failed",
    2003: "cannot connect",
    2005: "unknown host",
}

class MySQLSource(DbapiSource):
    kind = "mysql"
    serial_reason = ("MySQL and MariaDB cannot hand one transaction's consistent snapshot to another "
                     "session; lining several sessions up on one point in time (as mydumper does) takes "
                     "FLUSH TABLES WITH READ LOCK or BACKUP STAGE, i.e. the RELOAD privilege, which a "
                     "read-only role must not have")
    supports_probe = True
    spec: MySQLSourceSpec

    # ------------------------------------------------------------ connection settings

    def _parts(self, refresh: bool = False) -> dict[str, Any]:
        url = resolve(self.spec.url, refresh=refresh)
        parts = source_url(self, self.spec.url, url)  # refuses an ambiguous URL, quoting nothing of it
        if parts.scheme not in {"mysql", "mariadb", "mysql+pymysql"}:
            raise SourceError(f"source {self.name}: url must start with mysql:// (got {parts.scheme or 'nothing'}://)")
        password = unquote(parts.password) if parts.password else None
        if self.spec.password is not None:
            password = resolve(self.spec.password, refresh=refresh)
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username) if parts.username else None,
            "password": password or "",
            "database": parts.path.lstrip("/") or None,
            "options": dict(parse_qsl(parts.query)),
            "url": url,
        }

    def _privileged_role(self, cur: Any) -> str | None:
        """Refuse a user (or its enabled roles) holding any privilege beyond reading, globally or on
        the URL's schema or its tables (unless allow_privileged_role); what source_state records."""
        cur.execute("SELECT CURRENT_USER()")
        name, _, host = str(cur.fetchall()[0][0]).rpartition("@")
        grantees = [f"'{name}'@'{host}'"]
        with contextlib.suppress(Exception):  # roles: MariaDB 10.0.5+, MySQL 8
            cur.execute("SELECT ROLE_NAME FROM information_schema.ENABLED_ROLES")
            roles = [str(r[0]) for r in cur.fetchall() if r[0]]
            grantees += [f"'{r}'" for r in roles] + [f"'{r}'@'%'" for r in roles]
        database = self._parts()["database"]
        marks = ", ".join(["%s"] * len(grantees))
        cur.execute(
            f"SELECT 'global', PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE IN ({marks})"
            f" UNION ALL SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES"
            f"  WHERE GRANTEE IN ({marks}) AND (%s IS NULL OR %s LIKE TABLE_SCHEMA)"
            f" UNION ALL SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME), PRIVILEGE_TYPE"
            f"  FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE IN ({marks}) AND (%s IS NULL OR TABLE_SCHEMA = %s)",
            (*grantees, *grantees, database, database, *grantees, database, database),
        )
        found: dict[str, None] = {}
        for scope, privilege in cur.fetchall():
            if str(privilege).upper() not in _READ_PRIVILEGES:
                found[f"{privilege} on {'*.*' if scope == 'global' else scope}"] = None
        return refuse_privileged_role(self, list(found)[:8] + (["..."] if len(found) > 8 else []))

    def describe(self) -> dict[str, Any]:
        p = self._parts()
        return {"kind": "mysql", "host": p["host"], "port": p["port"], "database": p["database"]}

    def _secrets(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(Exception):
            found += secret_fragments(resolve(self.spec.url))
        with contextlib.suppress(Exception):
            p = self._parts()
            found += [p["url"], p["password"]]
        return found

    def _error(self, exc: BaseException, stage: str) -> SourceError:
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        text = str(args[1]) if len(args) > 1 else str(exc)
        text = redact(text.strip(), self._secrets())
        if code in TIMEOUT_CODES:
            hint = f"cancelled by the statement timeout ({self.spec.statement_timeout_s:g}s): "
        else:
            hint = _MESSAGES.get(code or 0, "")
            hint = hint + ": " if hint else ""
        transient = code in TRANSIENT_CODES and stage != "connect"
        return SourceError(
            f"source {self.name} ({stage}): {hint}{text}" + (f" [error {code}]" if code else ""),
            transient=transient,
            code=str(code) if code is not None else None,
        )

    def _connect(self, refresh: bool) -> Any:
        import pymysql
        import pymysql.cursors

        p = self._parts(refresh=refresh)
        ssl: dict[str, Any] | None = None
        if self.spec.ssl_ca is not None:
            ssl = {"ca": resolve(self.spec.ssl_ca), "check_hostname": True}
        timeout = max(1, int(self.spec.connect_timeout_s))
        return pymysql.connect(
            host=p["host"],
            port=p["port"],
            user=p["user"],
            password=p["password"],
            database=p["database"],
            connect_timeout=timeout,
            # a socket read that waits longer than the statement may run means a dead connection
            read_timeout=int(self.spec.statement_timeout_s) + 60,
            write_timeout=int(self.spec.statement_timeout_s) + 60,
            charset="utf8mb4",
            autocommit=True,
            cursorclass=pymysql.cursors.SSCursor,
            ssl=ssl,
            program_name="snapshot_platform",
        )

    def _kill_query(self, thread_id: int) -> None:
        """End the read's query from another session (``KILL QUERY``: a user may kill its own
        queries without any privilege): the thread blocked reading its rows then gets an error."""
        with contextlib.closing(self._connect(False)) as other, other.cursor() as cur:
            cur.execute("KILL QUERY %s", (int(thread_id),))

    # ------------------------------------------------------------ the read (skeleton: sources/dbapi.py)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import pymysql

        return (pymysql.err.MySQLError,)

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        return (*self._driver_errors(), OSError)

    def _connect_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self._driver_errors()):
            return self._error(exc, "connect")
        return SourceError(f"source {self.name} (connect): {redact(str(exc), self._secrets())}")

    def _is_auth_failure(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.OperationalError) and bool(exc.args[:1]) and exc.args[0] in AUTH_CODES

    def _secret_refs(self) -> list[Any]:
        return [self.spec.url, self.spec.password]

    def _release(self, conn: Any, cur: Any) -> None:
        # the connection only: closing an unbuffered cursor would read the rest of the result first;
        # closing the connection without reading it makes the server discard the result
        with contextlib.suppress(Exception):
            conn.close()

    def _open(self, conn: Any, cur: Any, query: str | None, window: Window, key: list[str], stage: Stage,
              probe: str | None = None) -> Opened:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchall()[0][0])
        mariadb = "mariadb" in version.lower()
        privileged = self._privileged_role(cur)
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SET SESSION TRANSACTION READ ONLY")
        if mariadb:
            cur.execute("SET SESSION max_statement_time = %s", (float(self.spec.statement_timeout_s),))
        else:
            cur.execute("SET SESSION MAX_EXECUTION_TIME = %s", (int(self.spec.statement_timeout_s * 1000),))
        # the writer may pause between batches: let the server wait for us as long as a statement may run
        cur.execute("SET SESSION net_write_timeout = %s", (int(self.spec.statement_timeout_s) + 60,))
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        stage.name = "snapshot marker"
        state = self._state(cur, version, mariadb)
        if privileged:
            state["privileged_role"] = privileged

        stage.name = "query"

        def bound(text: str) -> str:
            # PyMySQL formats with %: a literal % in the query must be doubled first
            return rewrite(text.replace("%", "%%"), lambda n, _i: f"%({n})s", backslash_escapes=True)[0]

        utc = dt.timezone.utc
        params = {
            "partition_start": window.start.astimezone(utc).replace(tzinfo=None),
            "partition_end": window.end.astimezone(utc).replace(tzinfo=None),
        }
        fingerprint = None
        if probe is not None:  # in the same consistent snapshot, before the query
            stage.name = "change probe"
            cur.execute(bound(probe.rstrip().rstrip(";")), params)
            names = [d[0] for d in cur.description]
            fingerprint = fingerprint_of(self.name, names, list(cur.fetchall()))
            stage.name = "query"
        if query is None:
            return Opened(schema=pa.schema([]), chunks=iter(()), to_batch=lambda b: b, state=state,
                          fingerprint=fingerprint)
        # the result's metadata first (LIMIT 0: the server does not run the query), to select the
        # columns the text protocol would print with too few digits as exact doubles
        cur.execute(bound(_probe(query)), params)
        fields = list(getattr(cur, "_result").fields)
        cur.fetchall()
        select = None
        if any(needs_double(f.type_code, f.scale) for f in fields):
            select = [
                f"CAST(snapshot_query.{_quote(f.name)} AS DOUBLE) AS {_quote(f.name)}"
                if needs_double(f.type_code, f.scale) else f"snapshot_query.{_quote(f.name)}"
                for f in fields
            ]
        cur.execute(bound(ordered(query, key, quote=_quote, select=select)), params)
        if [f.name for f in getattr(cur, "_result").fields] != [f.name for f in fields]:
            raise SourceError(f"source {self.name}: the query's columns changed between its two runs")
        schema = pa.schema(
            [pa.field(f.name, arrow_type(f.type_code, f.length, f.scale, f.flags, f.charsetnr), True) for f in fields]
        )
        types = {f.name: source_type(f.type_code, f.length, f.scale, f.flags, f.charsetnr) for f in fields}
        converters = [converter(t, f.type_code) for t, f in zip(schema.types, fields)]
        return Opened(
            schema=schema,
            chunks=fetched(cur, self.spec.fetch_batch_rows),
            to_batch=lambda rows: self._batch(rows, schema, converters, types),
            state=state,
            source_types=types,
            cancel=functools.partial(self._kill_query, conn.thread_id()),
            fingerprint=fingerprint,
        )

    def _unfit_errors(self) -> tuple[type[BaseException], ...]:
        return (ValueError, TypeError, OverflowError, UnicodeDecodeError)  # ArrowInvalid is a ValueError

    def _unfit(self, f: pa.Field, db_type: str, values: list[Any], exc: BaseException) -> str:
        """Why a value cannot be kept exactly, and what to do: never a snapshot with a different value."""
        where = f"source {self.name}: column {f.name!r} ({db_type})"
        if pa.types.is_temporal(f.type):
            # the driver leaves what Python's date types cannot hold as the server's text
            bad = next((v for v in values if isinstance(v, str)), None)
            if bad is not None:
                return (f"{where} holds {bad!r}, a zero or invalid date that {f.type} cannot hold: "
                        f"NULLIF it in the query, or CAST({f.name} AS CHAR) to keep the text")
        if pa.types.is_floating(f.type) and exc.args and isinstance(exc.args[0], float):
            return (f"{where} sent {exc.args[0]!r}, which is not a {f.type} value: "
                    f"CAST({f.name} AS DOUBLE) in the query")
        return f"{where} cannot be read as {f.type} exactly ({exc}): CAST it in the query"

    def _state(self, cur: Any, version: str, mariadb: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"engine": "mariadb" if mariadb else "mysql", "server_version": version}
        # (no parameters: PyMySQL leaves a % alone)
        cur.execute("SELECT @@server_id, @@log_bin, DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')")
        server_id, log_bin, started = cur.fetchall()[0]
        state.update(server_id=int(server_id), log_bin=bool(log_bin), transaction_start=started)
        if mariadb:
            cur.execute("SELECT @@gtid_current_pos, @@gtid_binlog_pos")
            current, binlog = cur.fetchall()[0]
            state["gtid_current_pos"] = current or None
            state["gtid_binlog_pos"] = binlog or None
            # MariaDB: the binlog coordinates that match START TRANSACTION WITH CONSISTENT SNAPSHOT
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            snap = {str(k): v for k, v in cur.fetchall()}
            if log_bin and snap.get("Binlog_snapshot_file"):
                state["binlog_file"] = snap["Binlog_snapshot_file"]
                state["binlog_position"] = int(snap.get("Binlog_snapshot_position") or 0)
        else:
            cur.execute("SELECT @@global.gtid_executed")
            state["gtid_executed"] = cur.fetchall()[0][0] or None
        return state


def _probe(query: str) -> str:
    """The query with no rows: its result's metadata, without running it."""
    return f"SELECT * FROM (\n{query.rstrip().rstrip(';')}\n) AS snapshot_query LIMIT 0"


def _quote(name: str) -> str:
    """MySQL quotes identifiers with backticks (double quotes are strings unless ANSI_QUOTES)."""
    return "`" + name.replace("`", "``") + "`"
