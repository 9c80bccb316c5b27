"""Type torture test for the MySQL/MariaDB source, against the MariaDB server on this machine.

One column per MariaDB 10.11 type, rows of extremes, special values and NULLs, snapshotted through
the real source; every cell is compared with ground truth the project's decoding has no part in:
the server's own text for the column (``CAST(col AS CHAR)``, ``HEX()``, ``TIME_TO_SEC()``,
``UNIX_TIMESTAMP()``) printed by the ``mariadb`` command-line client, and for floats the server's
own equality of the stored value with the Parquet value (its text is what was wrong). A test
shifts each column's value by one unit and shows that the comparison catches it. Values no Arrow
type holds (zero dates) must fail the read, naming the column, before anything is published.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import struct
import subprocess
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pymysql
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore, WriterSettings
from snapshot_platform_tests.conftest import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, missing_peer

UTC = dt.timezone.utc
DAY = "2024-03-10"

# column → (DDL type, ground-truth kind, source_type the manifest records, Arrow type)
COLUMNS: dict[str, tuple[str, str, str, pa.DataType]] = {
    "ti": ("TINYINT", "int", "TINYINT", pa.int8()),
    "uti": ("TINYINT UNSIGNED", "int", "TINYINT UNSIGNED", pa.uint8()),
    "si": ("SMALLINT", "int", "SMALLINT", pa.int16()),
    "usi": ("SMALLINT UNSIGNED", "int", "SMALLINT UNSIGNED", pa.uint16()),
    "mi": ("MEDIUMINT", "int", "MEDIUMINT", pa.int32()),
    "umi": ("MEDIUMINT UNSIGNED", "int", "MEDIUMINT UNSIGNED", pa.uint32()),
    "i": ("INT", "int", "INT", pa.int32()),
    "ui": ("INT UNSIGNED", "int", "INT UNSIGNED", pa.uint32()),
    "bi": ("BIGINT", "int", "BIGINT", pa.int64()),
    "ubi": ("BIGINT UNSIGNED", "int", "BIGINT UNSIGNED", pa.uint64()),
    "boo": ("BOOLEAN", "int", "TINYINT", pa.int8()),
    "dec": ("DECIMAL(10,2)", "decimal", "DECIMAL(10,2)", pa.decimal128(10, 2)),
    "udec": ("DECIMAL(10,2) UNSIGNED", "decimal", "DECIMAL(10,2) UNSIGNED", pa.decimal128(10, 2)),
    "dec38": ("DECIMAL(38,10)", "decimal", "DECIMAL(38,10)", pa.decimal128(38, 10)),
    "dec65_0": ("DECIMAL(65,0)", "decimal", "DECIMAL(65,0)", pa.decimal256(65, 0)),
    "dec65": ("DECIMAL(65,30)", "decimal", "DECIMAL(65,30)", pa.decimal256(65, 30)),
    "f": ("FLOAT", "float", "FLOAT", pa.float32()),
    "d": ("DOUBLE", "float", "DOUBLE", pa.float64()),
    "f73": ("FLOAT(7,3)", "float", "FLOAT(7,3)", pa.float32()),
    "d102": ("DOUBLE(10,2)", "float", "DOUBLE(10,2)", pa.float64()),
    "b1": ("BIT(1)", "bit", "BIT(1)", pa.uint64()),
    "b64": ("BIT(64)", "bit", "BIT(64)", pa.uint64()),
    "y": ("YEAR", "year", "YEAR", pa.int16()),
    "dt": ("DATE", "date", "DATE", pa.date32()),
    "dtm": ("DATETIME", "datetime", "DATETIME", pa.timestamp("us")),
    "dtm6": ("DATETIME(6)", "datetime", "DATETIME(6)", pa.timestamp("us")),
    "ts": ("TIMESTAMP NULL", "timestamp", "TIMESTAMP", pa.timestamp("us", tz="UTC")),
    "ts6": ("TIMESTAMP(6) NULL", "timestamp", "TIMESTAMP(6)", pa.timestamp("us", tz="UTC")),
    "tm": ("TIME", "time", "TIME", pa.duration("us")),
    "tm6": ("TIME(6)", "time", "TIME(6)", pa.duration("us")),
    "ch": ("CHAR(10)", "text", "CHAR(10)", pa.string()),
    "vc": ("VARCHAR(50)", "text", "VARCHAR(50)", pa.string()),
    "l1": ("VARCHAR(20) CHARACTER SET latin1", "text", "VARCHAR(20)", pa.string()),
    "tt": ("TINYTEXT", "text", "TINYTEXT", pa.string()),
    "tx": ("TEXT", "text", "TEXT", pa.string()),
    "mt": ("MEDIUMTEXT", "text", "MEDIUMTEXT", pa.string()),
    "lt": ("LONGTEXT", "text", "LONGTEXT", pa.string()),
    "bn": ("BINARY(4)", "bytes", "BINARY(4)", pa.binary()),
    "vb": ("VARBINARY(20)", "bytes", "VARBINARY(20)", pa.binary()),
    "tb": ("TINYBLOB", "bytes", "TINYBLOB", pa.binary()),
    "bl": ("BLOB", "bytes", "BLOB", pa.binary()),
    "mb": ("MEDIUMBLOB", "bytes", "MEDIUMBLOB", pa.binary()),
    "lb": ("LONGBLOB", "bytes", "LONGBLOB", pa.binary()),
    "en": ("ENUM('a','b','ü')", "text", "ENUM", pa.string()),
    "st": ("SET('x','y','z')", "text", "SET", pa.string()),
    "js": ("JSON", "text", "LONGTEXT", pa.string()),  # MariaDB's JSON is LONGTEXT
    "geo": ("GEOMETRY", "bytes", "GEOMETRY", pa.binary()),  # SRID (4 bytes) + WKB, as stored
    "pt": ("POINT", "bytes", "GEOMETRY", pa.binary()),
    "ip": ("INET6", "text", "CHAR(39)", pa.string()),  # sent as its text form
    "uu": ("UUID", "text", "CHAR(36)", pa.string()),
}

EMOJI = "😀 ünïcode ✓"
ROWS = [
    # 1: the minimum of each type
    dict(ti=-128, uti=0, si=-32768, usi=0, mi=-8388608, umi=0, i=-2147483648, ui=0, bi=-9223372036854775808,
         ubi=0, boo=0, dec="-99999999.99", udec="0.00", dec38="-9999999999999999999999999999.9999999999",
         dec65_0="-" + "9" * 65, dec65="-" + "9" * 35 + "." + "9" * 30,
         f="-3.4028234663852886e38", d="-1.7976931348623157e308", f73="-9999.999", d102="-99999999.99",
         b1="b'0'", b64="b'0'", y=1901, dt="1000-01-01", dtm="1000-01-01 00:00:00",
         dtm6="1000-01-01 00:00:00.000000", ts="1970-01-01 00:00:01", ts6="1970-01-01 00:00:01.000000",
         tm="-838:59:59", tm6="-838:59:59.000000", ch="", vc="", l1="", tt="", tx="", mt="", lt="",
         bn="X''", vb="X''", tb="X''", bl="X''", mb="X''", lb="X''", en="a", st="", js="{}",
         geo="ST_GeomFromText('POINT(0 0)')", pt="ST_GeomFromText('POINT(-180 -90)', 4326)",
         ip="::", uu="00000000-0000-0000-0000-000000000000"),
    # 2: the maximum
    dict(ti=127, uti=255, si=32767, usi=65535, mi=8388607, umi=16777215, i=2147483647, ui=4294967295,
         bi=9223372036854775807, ubi=18446744073709551615, boo=1, dec="99999999.99", udec="99999999.99",
         dec38="9999999999999999999999999999.9999999999", dec65_0="9" * 65, dec65="9" * 35 + "." + "9" * 30,
         f="3.4028234663852886e38", d="1.7976931348623157e308", f73="9999.999", d102="99999999.99",
         b1="b'1'", b64="b'" + "1" * 64 + "'", y=2155, dt="9999-12-31", dtm="9999-12-31 23:59:59",
         dtm6="9999-12-31 23:59:59.999999", ts="2038-01-19 03:14:07", ts6="2038-01-19 03:14:07.999999",
         tm="838:59:59", tm6="838:59:59.999999", ch="z" * 10, vc="é" * 50, l1="ÿ" * 20, tt="x" * 255,
         tx=EMOJI * 100, mt=EMOJI * 1000, lt=EMOJI * 10000, bn="X'FFFFFFFF'", vb="X'" + "FF" * 20 + "'",
         tb="X'" + "00FF" * 127 + "'", bl="X'" + "ABCDEF" * 1000 + "'", mb="X'00'", lb="X'" + "7F" * 70000 + "'",
         en="ü", st="x,y,z", js='{"k": [1, 2.50, "\\\\u00e9", null, 1e400]}',
         geo="ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))', 3857)", pt="ST_GeomFromText('POINT(180 90)', 4326)",
         ip="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", uu="ffffffff-ffff-ffff-ffff-ffffffffffff"),
    # 3: special values: what a text protocol or a lossy conversion gets wrong
    dict(ti=-1, uti=128, si=-1, usi=32768, mi=-1, umi=8388608, i=-1, ui=2147483648, bi=-1,
         ubi=9223372036854775808, boo=1, dec="-0.01", udec="0.01", dec38="0.0000000001",
         dec65_0="1" + "0" * 64, dec65="-0.000000000000000000000000000001",
         f="16777216", d="0.30000000000000004", f73="1.2345", d102="1.005", b1="b'1'", b64="b'1" + "0" * 63 + "'",
         y=0, dt="2024-02-29", dtm="2024-03-10 13:14:15", dtm6="2024-03-10 13:14:15.000001",
         ts="2024-03-10 00:00:00", ts6="2024-03-31 01:00:00.5", tm="-00:00:01", tm6="-00:00:00.000001",
         ch="ab  ", vc=" padded  ", l1="café", tt="tab\there", tx="line\nbreak\r\n", mt="nul\\0byte",
         lt="%s %(x)s :partition_start ''", bn="X'61'", vb="X'00'", tb="X'0000'", bl="X'00FF00'",
         mb="X'5C27'", lb="X'E282AC'", en="", st="z", js='"a string"', geo="ST_GeomFromText('LINESTRING(0 0,1 1)')",
         pt="ST_GeomFromText('POINT(0.1 -0.30000000000000004)')", ip="::ffff:1.2.3.4",
         uu="123e4567-e89b-12d3-a456-426655440000"),
    # 4: more floats that 6 significant digits get wrong, subnormals
    dict(f="0.1", d="4.9406564584124654e-324", f73="0", d102="-0.01", ch=EMOJI[:10], vc=EMOJI, dt="2024-03-10",
         tm="24:00:00", tm6="100:00:00.5"),
    dict(f="1.401298464324817e-45", d="2.2250738585072014e-308", f73="-0.001", d102="12345678.99"),
    dict(f="1.1754943508222875e-38", d="123456789012345678"),
    # 7: every column NULL
    dict(),
]
# what the FLOAT column holds: float32 rounding of the literal, computed here (no server involved)
FLOAT32 = {1: -3.4028234663852886e38, 2: 3.4028234663852886e38, 3: 16777216.0, 4: 0.10000000149011612,
           5: 1.401298464324817e-45, 6: 1.1754943508222875e-38}

STRING_LITERAL_KINDS = {"text", "decimal", "date", "datetime", "timestamp", "time"}


def literal(col: str, value: Any) -> str:
    kind = COLUMNS[col][1]
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if kind in ("bytes", "bit") or col in ("geo", "pt") or kind == "float":
        return value  # X'..', b'..', a function call, a number
    if kind == "timestamp":  # given in UTC, written in the session's zone (+05:00)
        return f"CONVERT_TZ('{value}', '+00:00', '+05:00')"
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def mariadb_cli(database: str, sql: str) -> list[list[str]]:
    """Rows printed by the ``mariadb`` client (tab-separated, NULL as ``NULL``): the server's own text."""
    exe = shutil.which("mariadb") or shutil.which("mysql")
    if exe is None:
        missing_peer("the mariadb command-line client is not installed")
    out = subprocess.run(
        [exe, "--batch", "--skip-column-names", f"--host={MYSQL_HOST}", f"--port={MYSQL_PORT}",
         f"--user={MYSQL_USER}", "--default-character-set=utf8mb4", database, "-e", sql],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return [line.split("\t") for line in out.splitlines()]


GROUND_TRUTH_SQL = {
    "int": "CAST({c} AS CHAR)",
    "year": "{c} + 0",
    "bit": "CAST({c} + 0 AS CHAR)",
    "decimal": "CAST({c} AS CHAR)",
    "date": "CAST({c} AS CHAR)",
    "datetime": "CAST({c} AS CHAR)",
    "timestamp": "UNIX_TIMESTAMP({c})",  # seconds since the epoch: no time zone involved
    "time": "TIME_TO_SEC({c})",
    "text": "HEX(CONVERT({c} USING utf8mb4))",
    "bytes": "HEX({c})",
}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = " WHERE :partition_start < :partition_end"  # every row, in every window


def as_server_text(kind: str, v: Any) -> str:
    """A Parquet value in the form of the ground truth's text (independent of the source's decoding)."""
    if v is None:
        return "NULL"
    if kind in ("int", "year", "bit"):
        return str(v)
    if kind == "decimal":
        return format(v, "f")
    if kind == "date":
        return v.isoformat()
    if kind == "datetime":
        return v.isoformat(" ")
    if kind == "timestamp":
        us = (v - EPOCH) // dt.timedelta(microseconds=1)
        return str(Decimal(us).scaleb(-6))
    if kind == "time":
        return str(Decimal(v // dt.timedelta(microseconds=1)).scaleb(-6))
    if kind == "text":
        return v.encode("utf-8").hex().upper()
    return v.hex().upper()


def normalise_truth(kind: str, text: str) -> str:
    if text == "NULL":
        return text
    if kind in ("timestamp", "time"):
        return str(Decimal(text).scaleb(0).normalize()) if Decimal(text) else "0"
    if kind == "datetime":
        return dt.datetime.fromisoformat(text).isoformat(" ")
    return text


def mismatches(database: str, table: pa.Table, columns: list[str]) -> list[tuple[int, str, Any, str]]:
    """(id, column, Parquet value, server's value) for every cell that differs from the server's."""
    ids = table.column("id").to_pylist()
    out = []
    plain = [c for c in columns if COLUMNS[c][1] != "float"]
    if plain:
        exprs = ", ".join(GROUND_TRUTH_SQL[COLUMNS[c][1]].format(c=f"`{c}`") for c in plain)
        truth = {int(r[0]): r[1:] for r in mariadb_cli(database, f"SELECT id, {exprs} FROM torture ORDER BY id")}
        for j, c in enumerate(plain):
            kind = COLUMNS[c][1]
            for row_id, v in zip(ids, table.column(c).to_pylist()):
                server = normalise_truth(kind, truth[row_id][j])
                mine = normalise_truth(kind, as_server_text(kind, v))
                if server != mine:
                    out.append((row_id, c, v, truth[row_id][j]))
    for c in columns:
        if COLUMNS[c][1] != "float":
            continue
        # the server compares its stored value with the Parquet value (as an exact double literal)
        tests = []
        for row_id, v in zip(ids, table.column(c).to_pylist()):
            lit = "NULL" if v is None else (repr(float(v)) if "e" in repr(float(v)) else repr(float(v)) + "e0")
            tests.append(f"WHEN {row_id} THEN `{c}` <=> {lit}")
        rows = mariadb_cli(database, f"SELECT id, CASE id {' '.join(tests)} END, `{c}` FROM torture ORDER BY id")
        for (row_id, same, shown), v in zip(rows, table.column(c).to_pylist()):
            if same != "1":
                out.append((int(row_id), c, v, shown))
    return out


def sql(url: str, *statements: str, args: tuple = ()) -> None:
    with pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=url.rsplit("/", 1)[1],
                         autocommit=True, charset="utf8mb4") as conn:
        cur = conn.cursor()
        for s in statements:
            cur.execute(s)


def make_catalog(url: str, query: str, **source: Any) -> Catalog:
    return parse_catalog({
        "sources": {"maria": {"kind": "mysql", "url": url, "allow_privileged_role": True, **source}},  # root
        "snapshots": {"snap": {"source": "maria", "query": query + WINDOW,
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}, "key": ["id"]}},
    })


@pytest.fixture
def torture(mysql_database: str, tmp_path: Path) -> tuple[str, pa.Table, dict[str, Any]]:
    ddl = ", ".join(f"`{c}` {t}" for c, (t, *_rest) in COLUMNS.items())
    statements = [f"CREATE TABLE torture (id INT PRIMARY KEY, {ddl}) DEFAULT CHARSET = utf8mb4",
                  "SET time_zone = '+05:00'",  # TIMESTAMPs below are UTC: converted by the session
                  "SET sql_mode = ''"]  # for ENUM's '' (the invalid value's index 0)
    for n, row in enumerate(ROWS, start=1):
        values = ", ".join(literal(c, row.get(c)) for c in COLUMNS)
        statements.append(f"INSERT INTO torture VALUES ({n}, {values})")
    sql(mysql_database, *statements)
    store = SnapshotStore(tmp_path / "storage")
    catalog = make_catalog(mysql_database, "SELECT * FROM torture", fetch_batch_rows=100)
    outcome = take_snapshot(catalog, "snap", DAY, store)
    return mysql_database.rsplit("/", 1)[1], store.read_table("snap", DAY), outcome.result.manifest


def test_every_cell_equals_the_servers_value(torture: tuple[str, pa.Table, dict[str, Any]]) -> None:
    database, table, manifest = torture
    assert table.num_rows == len(ROWS)
    assert {f.name: f.type for f in table.schema} == {"id": pa.int32(), **{c: v[3] for c, v in COLUMNS.items()}}
    # the manifest records each column's database type, as the result metadata names it
    recorded = {e.name: e.source_type for e in manifest.schema}
    assert recorded == {"id": "INT", **{c: v[2] for c, v in COLUMNS.items()}}
    assert mismatches(database, table, list(COLUMNS)) == []
    # and against values computed without the server: what a text protocol rounded before
    floats = table.column("f").to_pylist()
    assert {i: floats[i - 1] for i in FLOAT32} == FLOAT32
    assert table.column("ubi").to_pylist()[1] == 2**64 - 1
    assert table.column("b64").to_pylist()[1] == 2**64 - 1
    assert table.column("tm").to_pylist()[0] == -dt.timedelta(hours=838, minutes=59, seconds=59)
    assert table.column("bn").to_pylist()[2] == b"a\x00\x00\x00"  # BINARY(n) keeps its zero padding
    assert table.column("lt").to_pylist()[1] == EMOJI * 10000
    assert table.column("ts6").to_pylist()[2] == dt.datetime(2024, 3, 31, 1, 0, 0, 500000, tzinfo=UTC)
    assert table.column("geo").to_pylist()[1][:4] == struct.pack("<I", 3857)  # the SRID, then WKB
    assert all(v is None for c, v in table.slice(len(ROWS) - 1).to_pylist()[0].items() if c != "id")


def one_unit_off(t: pa.DataType, v: Any) -> Any:
    """``v`` moved by the smallest step its type has (down where up would overflow)."""
    if pa.types.is_integer(t):
        up = v + 1
        try:
            pa.array([up], t)
            return up
        except (pa.ArrowInvalid, OverflowError):
            return v - 1
    if pa.types.is_decimal(t):
        with localcontext() as ctx:
            ctx.prec = 100  # the default context rounds to 28 digits
            step = Decimal(1).scaleb(-t.scale)
            return v + step if len(str(abs(v + step)).replace(".", "").lstrip("0")) <= t.precision else v - step
    if t == pa.float32():
        (bits,) = struct.unpack("<i", struct.pack("<f", v))
        return struct.unpack("<f", struct.pack("<i", bits - 1 if bits > 0 else bits + 1))[0]
    if t == pa.float64():
        return math.nextafter(v, 0.0)
    if pa.types.is_date(t):
        return v - dt.timedelta(days=1) if v.year == 9999 else v + dt.timedelta(days=1)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return v - dt.timedelta(microseconds=1)
    if pa.types.is_string(t):
        return v[:-1] + chr(ord(v[-1]) + 1) if v else " "
    return v[:-1] + bytes([(v[-1] + 1) % 256]) if v else b"\x00"


def test_a_value_one_unit_off_is_caught(torture: tuple[str, pa.Table, dict[str, Any]]) -> None:
    """The comparison can fail: for every column, one cell moved by one unit is reported, alone."""
    database, table, _ = torture
    for c, (_ddl, _kind, _st, t) in COLUMNS.items():
        values = table.column(c).to_pylist()
        row = 1 if values[1] is not None else 0  # the maximum where there is one
        values[row] = one_unit_off(t, values[row])
        broken = table.set_column(table.schema.get_field_index(c), c, pa.array(values, t))
        found = mismatches(database, broken, [c])
        assert [(i, col) for i, col, *_ in found] == [(row + 1, c)], (c, found)


@pytest.mark.parametrize(
    ("ddl", "value", "db_type"),
    [
        ("DATE", "'0000-00-00'", "DATE"),
        ("DATE", "'2024-00-10'", "DATE"),
        ("DATETIME(6)", "'0000-00-00 00:00:00'", "DATETIME(6)"),
        ("DATETIME", "'2024-03-00 12:00:00'", "DATETIME"),
        ("TIMESTAMP NULL", "'0000-00-00 00:00:00'", "TIMESTAMP"),
    ],
)
def test_zero_dates_fail_naming_the_column_before_anything_is_published(
    mysql_database: str, tmp_path: Path, ddl: str, value: str, db_type: str
) -> None:
    sql(mysql_database, f"CREATE TABLE z (id INT PRIMARY KEY, `when` {ddl})",
        "INSERT INTO z SELECT seq, NULL FROM seq_1_to_250", f"UPDATE z SET `when` = {value} WHERE id = 3",
        "UPDATE z SET id = 1000 WHERE id = 3")
    store = SnapshotStore(tmp_path / "storage")
    # the bad value in the third batch: two were already written to the staging area
    catalog = make_catalog(mysql_database, "SELECT * FROM z", fetch_batch_rows=100)
    with pytest.raises(SourceError) as err:
        take_snapshot(catalog, "snap", DAY, store)
    text = str(err.value)
    assert f"source maria: column 'when' ({db_type}) holds " in text
    assert "NULLIF" in text and "CAST(when AS CHAR)" in text
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []
    # the advice works: the text of the zero date is kept exactly
    fixed = make_catalog(mysql_database, "SELECT id, CAST(`when` AS CHAR) AS `when` FROM z")
    take_snapshot(fixed, "snap", DAY, store)
    assert store.read_table("snap", DAY).column("when").to_pylist()[-1].startswith(value.strip("'"))


SIMPLE = (
    """CREATE TABLE simple (id BIGINT PRIMARY KEY, n INT, u BIGINT UNSIGNED, amount DECIMAL(12,2),
           x DOUBLE, d DATE, at DATETIME(6), ts TIMESTAMP(6) NULL, t TIME, s VARCHAR(20), b VARBINARY(8),
           e ENUM('a','b'), bits BIT(8), y YEAR)""",
    "SET time_zone = '+00:00'",
    """INSERT INTO simple VALUES
           (1, -5, 18446744073709551615, 12.34, 0.1, '2024-03-10', '2024-03-10 01:02:03.000004',
            '2024-03-10 05:06:07.5', '-12:00:00', 'héllo', X'00FF', 'b', b'10101010', 2024),
           (2, NULL, 0, -0.01, -1.5e300, '1999-12-31', '1000-01-01 00:00:00', '1970-01-01 00:00:01',
            '838:59:59', '', X'', 'a', b'0', 1901),
           (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
)


def test_exact_types_keep_their_version_id(mysql_database: str, tmp_path: Path) -> None:
    """Columns that were already exact keep their Arrow types and bytes: the same version id as
    before the FLOAT fix and the recorded database types (computed with the source of commit 1425f2d,
    under the writer settings of that time); under today's defaults, a pinned id of its own."""
    sql(mysql_database, *SIMPLE)
    store = SnapshotStore(tmp_path / "storage",
                          settings=WriterSettings(dictionary="all", statistics="all", decimal_storage="fixed"))
    outcome = take_snapshot(make_catalog(mysql_database, "SELECT * FROM simple"), "snap", DAY, store)
    assert outcome.result.manifest.version == "bcdd79b503dc78b4c3c2"
    today = take_snapshot(make_catalog(mysql_database, "SELECT * FROM simple"), "snap", DAY,
                          SnapshotStore(tmp_path / "today"))
    assert today.result.manifest.version == "9a8779b6714ee92e4db3"
