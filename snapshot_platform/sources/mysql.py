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
import struct
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, unquote

import pyarrow as pa

from snapshot_platform.catalog import MySQLSourceSpec, SecretMissingError, resolve
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
from snapshot_platform.sql_params import rewrite

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

# MySQL protocol column types (pymysql.constants.FIELD_TYPE)
_DECIMAL, _TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _NULL, _TIMESTAMP, _LONGLONG, _INT24 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
_DATE, _TIME, _DATETIME, _YEAR, _NEWDATE, _VARCHAR, _BIT = 10, 11, 12, 13, 14, 15, 16
_JSON, _NEWDECIMAL, _ENUM, _SET = 245, 246, 247, 248
_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB, _VAR_STRING, _STRING, _GEOMETRY = 249, 250, 251, 252, 253, 254, 255
_UNSIGNED_FLAG, _ENUM_FLAG, _SET_FLAG = 32, 256, 2048
_BINARY_CHARSET = 63
_NOT_FIXED_DEC = 31  # the scale of a FLOAT/DOUBLE printed with all its digits (no (M,D))
_RESULT_MAXLEN = 4  # bytes per character of the session's result character set, utf8mb4

_INTS = {
    _TINY: (pa.int8(), pa.uint8()),
    _SHORT: (pa.int16(), pa.uint16()),
    _INT24: (pa.int32(), pa.uint32()),
    _LONG: (pa.int32(), pa.uint32()),
    _LONGLONG: (pa.int64(), pa.uint64()),
}


def _decimal_type(length: int, scale: int, unsigned: bool) -> pa.DataType:
    """MySQL reports DECIMAL(p,s) with length p + (1 for the point if s > 0) + (1 for the sign if signed)."""
    precision = length - (1 if scale > 0 else 0) - (0 if unsigned else 1)
    precision = max(precision, scale, 1)
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def arrow_type(type_code: int, length: int, scale: int, flags: int, charsetnr: int) -> pa.DataType:
    """The Arrow type of one result column, from the protocol's column definition alone."""
    unsigned = bool(flags & _UNSIGNED_FLAG)
    if type_code in _INTS:
        return _INTS[type_code][1 if unsigned else 0]
    if type_code in (_DECIMAL, _NEWDECIMAL):
        return _decimal_type(length, scale, unsigned)
    if type_code == _FLOAT:
        return pa.float32()
    if type_code == _DOUBLE:
        return pa.float64()
    if type_code == _YEAR:
        return pa.int16()
    if type_code in (_DATE, _NEWDATE):
        return pa.date32()
    if type_code == _DATETIME:
        return pa.timestamp("us")
    if type_code == _TIMESTAMP:
        return pa.timestamp("us", tz="UTC")
    if type_code == _TIME:
        return pa.duration("us")
    if type_code == _BIT:
        return pa.uint64()
    if type_code == _NULL:
        return pa.null()
    if type_code == _GEOMETRY:
        return pa.binary()
    if type_code in (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB, _VAR_STRING, _STRING, _VARCHAR):
        return pa.binary() if charsetnr == _BINARY_CHARSET else pa.string()
    return pa.string()  # JSON, ENUM, SET and anything newer: as text


_INT_NAMES = {_TINY: "TINYINT", _SHORT: "SMALLINT", _INT24: "MEDIUMINT", _LONG: "INT", _LONGLONG: "BIGINT"}
_SIMPLE_NAMES = {_FLOAT: "FLOAT", _DOUBLE: "DOUBLE", _YEAR: "YEAR", _DATE: "DATE", _NEWDATE: "DATE",
                 _NULL: "NULL", _GEOMETRY: "GEOMETRY", _JSON: "JSON", _ENUM: "ENUM", _SET: "SET"}
_BLOB_NAMES = ((255, "TINY"), (65535, ""), (16777215, "MEDIUM"))


def source_type(type_code: int, length: int, scale: int, flags: int, charsetnr: int) -> str:
    """The database type of a result column as its metadata tells it (``BIGINT UNSIGNED``, ``DECIMAL(20,4)``).

    The protocol does not tell ``JSON`` (MariaDB: ``LONGTEXT``) or ``INET6``/``UUID`` (``CHAR(39)``/
    ``CHAR(36)``) from the type they are sent as.
    """
    unsigned = " UNSIGNED" if flags & _UNSIGNED_FLAG else ""
    binary = charsetnr == _BINARY_CHARSET
    chars = length if binary else length // _RESULT_MAXLEN
    if type_code in _INT_NAMES:
        return _INT_NAMES[type_code] + unsigned
    if type_code in (_DECIMAL, _NEWDECIMAL):
        t = _decimal_type(length, scale, bool(unsigned))
        return f"DECIMAL({t.precision},{t.scale}){unsigned}"
    if type_code in (_FLOAT, _DOUBLE):
        name = _SIMPLE_NAMES[type_code]
        return name if scale == _NOT_FIXED_DEC else f"{name}({length},{scale})"
    if type_code in (_DATETIME, _TIMESTAMP, _TIME):
        name = {_DATETIME: "DATETIME", _TIMESTAMP: "TIMESTAMP", _TIME: "TIME"}[type_code]
        return f"{name}({scale})" if scale else name
    if type_code == _BIT:
        return f"BIT({length})"
    if flags & _ENUM_FLAG:
        return "ENUM"
    if flags & _SET_FLAG:
        return "SET"
    if type_code == _STRING:
        return f"BINARY({chars})" if binary else f"CHAR({chars})"
    if type_code in (_VAR_STRING, _VARCHAR):
        return f"VARBINARY({chars})" if binary else f"VARCHAR({chars})"
    if type_code in (_TINY_BLOB, _MEDIUM_BLOB, _LONG_BLOB, _BLOB):
        size = next((prefix for limit, prefix in _BLOB_NAMES if chars <= limit), "LONG")
        return size + ("BLOB" if binary else "TEXT")
    return _SIMPLE_NAMES.get(type_code, f"type {type_code}")


def needs_double(type_code: int, scale: int) -> bool:
    """Whether the text protocol prints this column with fewer digits than it holds (see the module doc)."""
    return type_code == _FLOAT or (type_code == _DOUBLE and scale != _NOT_FIXED_DEC)


def _float32(value: float) -> float:
    """A FLOAT read as a double: the same number as a float32, or ValueError (never a rounded value)."""
    try:
        (narrow,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:
        raise ValueError(value) from None
    if narrow != value:
        raise ValueError(value)
    return value


def _bits(value: Any) -> Any:
    return int.from_bytes(value, "big") if isinstance(value, (bytes, bytearray)) else value


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    return value


def _converter(t: pa.DataType, type_code: int) -> Callable[[Any], Any] | None:
    if type_code == _BIT:
        return _bits
    if type_code == _FLOAT:
        return _float32
    if pa.types.is_string(t):
        return _text
    return None


class MySQLSource(Source):
    kind = "mysql"
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

    # ------------------------------------------------------------ the read

    @contextlib.contextmanager
    def read(self, query: str, window: Window, key: list[str]) -> Iterator[SourceRead]:
        import pymysql

        try:
            conn = with_secret_refresh(
                self._connect,
                lambda exc: isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] and exc.args[0] in AUTH_CODES,
                refreshable=bool(aws_refs(self.spec.url, self.spec.password)),
            )
        except pymysql.err.MySQLError as exc:
            raise self._error(exc, "connect") from None
        except SecretMissingError as exc:
            raise SourceError(f"source {self.name} (connect): {exc}") from None
        except OSError as exc:
            raise SourceError(f"source {self.name} (connect): {redact(str(exc), self._secrets())}") from None
        cur = conn.cursor()
        stage = "session setup"
        try:
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
            stage = "snapshot marker"
            state = self._state(cur, version, mariadb)
            if privileged:
                state["privileged_role"] = privileged

            stage = "query"

            def bound(text: str) -> str:
                # PyMySQL formats with %: a literal % in the query must be doubled first
                return rewrite(text.replace("%", "%%"), lambda n, _i: f"%({n})s", backslash_escapes=True)[0]

            utc = dt.timezone.utc
            params = {
                "partition_start": window.start.astimezone(utc).replace(tzinfo=None),
                "partition_end": window.end.astimezone(utc).replace(tzinfo=None),
            }
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
                [
                    pa.field(f.name, arrow_type(f.type_code, f.length, f.scale, f.flags, f.charsetnr), True)
                    for f in fields
                ]
            )
            types = {f.name: source_type(f.type_code, f.length, f.scale, f.flags, f.charsetnr) for f in fields}
            converters = [_converter(t, f.type_code) for t, f in zip(schema.types, fields)]
            batch_rows = self.spec.fetch_batch_rows

            def batches() -> Iterator[pa.RecordBatch]:
                while True:
                    try:
                        rows = cur.fetchmany(batch_rows)
                    except pymysql.err.MySQLError as exc:
                        raise self._error(exc, "streaming rows") from None
                    if not rows:
                        return
                    yield self._batch(rows, schema, converters, types)

            yield SourceRead(schema=schema, batches=batches(), params=window.as_params(), state=state,
                             source_types=types, cancel=functools.partial(self._kill_query, conn.thread_id()))
        except pymysql.err.MySQLError as exc:
            raise self._error(exc, stage) from None
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # closing without reading the rest: the server discards the result

    def _batch(
        self,
        rows: list[tuple],
        schema: pa.Schema,
        converters: list[Callable[[Any], Any] | None],
        types: dict[str, str],
    ) -> pa.RecordBatch:
        arrays = []
        for i, (f, conv) in enumerate(zip(schema, converters)):
            values = [r[i] for r in rows]
            try:
                if conv is not None:
                    values = [None if v is None else conv(v) for v in values]
                arrays.append(pa.array(values, type=f.type))
            except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:  # ArrowInvalid is a ValueError
                raise SourceError(self._unfit(f, types.get(f.name, "?"), values, exc)) from None
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

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
