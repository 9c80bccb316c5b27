"""Type torture test of the PostgreSQL source: one column per PostgreSQL 15 type, rows of extreme,
special and NULL values, snapshotted through the real source and compared cell by cell with the
server's own text of each value.

The ground truth never goes through the project's decoding (ADBC's binary COPY): it is the server's
text output, fetched by psycopg with every type loaded as plain text, and the Parquet values are
rendered to PostgreSQL's text format by the small independent renderers below (dates from day
numbers, timestamps from microsecond counts, so that years BC and beyond 9999 compare too).
Values a snapshot type cannot hold (infinity in a date, 24:00:00, a 2-D array...) must fail the read
with an error naming the column, its type and the cast to use, and publish nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore, WriterSettings
from snapshot_platform_tests.conftest import reader_url
from snapshot_platform_tests.pg_text import mismatches, server_text

pytestmark = pytest.mark.postgres

DAY = "2024-03-10"


def make_catalog(url: str, query: str) -> Catalog:
    return parse_catalog({
        "sources": {"pg": {"kind": "postgres", "url": reader_url(url)}},  # a SELECT-only role
        "snapshots": {"snap": {"source": "pg", "query": query, "key": ["id"],
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


# ---------------------------------------------------------------- the torture table

SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    "CREATE TYPE pair AS (a int, b text)",
]

# column → (type, values of rows 1..5); row 4 is NULL everywhere
COLUMNS: dict[str, tuple[str, list[str]]] = {
    "i2": ("int2", ["1", "-32768", "32767", "0"]),
    "i4": ("int4", ["1", "-2147483648", "2147483647", "0"]),
    "i8": ("int8", ["1", "-9223372036854775808", "9223372036854775807", "0"]),
    "f4": ("real", ["1.5", "'NaN'", "'-Infinity'", "3.4028235e38"]),
    "f8": ("float8", ["0.1", "'Infinity'", "5e-324", "'-0'"]),
    "n": ("numeric(20,4)", ["1.5", "-9999999999999999.9999", "9999999999999999.9999", "0"]),
    "wide": ("numeric(50,10)", ["1", "-1234567890123456789012345678901234567890.0123456789", "1e-10", "0"]),
    "nfree": ("numeric", ["1.50", "-1e-30", "123456789012345678901234567890.123456789", "0"]),
    "m": ("money", ["12.34", "-92233720368547758.08", "92233720368547758.07", "0"]),
    "o": ("oid", ["1", "4294967295", "0", "2147483648"]),
    "xi": ("xid", ["'1'", "'4294967295'", "'0'", "'3'"]),
    "x8": ("xid8", ["'1'", "'18446744073709551615'", "'0'", "'3'"]),
    "b": ("bool", ["true", "false", "true", "false"]),
    "d": ("date", ["'2024-03-10'", "'4714-11-24 BC'", "'5874897-12-31'", "'0001-01-01'"]),
    "ts": ("timestamp", ["'2024-03-10 13:14:15.000001'", "'4714-11-24 00:00:00 BC'",
                         "'294246-12-31 23:59:59.999999'", "'1999-12-31 23:59:59.5'"]),
    "tstz": ("timestamptz", ["'2024-03-10 09:30:00+05:30'", "'4714-11-24 00:00:00+00 BC'",
                             "'294246-12-31 23:59:59.999999+00'", "'1970-01-01 00:00:00+00'"]),
    "tm": ("time", ["'13:14:15.123456'", "'00:00:00'", "'23:59:59.999999'", "'12:00:00.5'"]),
    "ttz": ("timetz", ["'13:14:15+05:30'", "'00:00:00-15:59'", "'24:00:00+15:59'", "'12:00:00.5+00'"]),
    "iv": ("interval", ["'1 year 2 mons 3 days 04:05:06.789'", "'-178000000 years'", "'178000000 years'",
                        "'-00:00:00.000001'"]),
    "t": ("text", ["'hello ünïcode ✓'", "''", "'tab\there\nnewline \\ back'", "'😀 astral'"]),
    "vc": ("varchar(5)", ["'abc'", "''", "'ünï'", "' '"]),
    "ch": ("char(4)", ["'ab'", "''", "'abcd'", "'ü'"]),
    "nm": ("name", ["'nm'", "''", "repeat('x', 63)", "'ü'"]),
    "qc": ('"char"', ["'a'", "''", "'\\200'", "'\\377'"]),
    "e": ("mood", ["'happy'", "'sad'", "'ok'", "'sad'"]),
    "dom": ("posint", ["1", "2147483647", "7", "1"]),
    "raw": ("bytea", ["'\\x00ff'", "''", "'\\x5c78'", "decode(repeat('ab', 100), 'hex')"]),
    "u": ("uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'",
                   "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "'123e4567-e89b-12d3-a456-426614174000'"]),
    "j": ("json", ["'{\"z\":  1, \"z\": 2}'", "'[]'", "'\"\\u00e9\"'", "'1e400'"]),
    "jb": ("jsonb", ["'{\"z\":  1, \"a\": [1, 2.50]}'", "'{}'", "'\"\\u00e9\"'", "'1e400'"]),
    "x": ("xml", ["'<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>x</a>'",
                  "'<?xml version=\"1.0\" standalone=\"yes\"?><a/>'", "'text fragment'", "'<b>ü</b>'"]),
    "ip": ("inet", ["'192.168.0.1/24'", "'::1'", "'255.255.255.255'", "'2001:db8::1/64'"]),
    "cn": ("cidr", ["'10.0.0.0/8'", "'::/0'", "'192.168.1.0/24'", "'2001:db8::/32'"]),
    "mac": ("macaddr", ["'08:00:2b:01:02:03'", "'00:00:00:00:00:00'", "'ff:ff:ff:ff:ff:ff'", "'08:00:2b:01:02:04'"]),
    "mac8": ("macaddr8", ["'08:00:2b:01:02:03:04:05'", "'00:00:00:00:00:00:00:00'",
                          "'ff:ff:ff:ff:ff:ff:ff:ff'", "'08:00:2b:ff:fe:01:02:03'"]),
    "bt": ("bit(4)", ["B'1010'", "B'0000'", "B'1111'", "B'0001'"]),
    "vb": ("varbit", ["B'101'", "B''", "B'1111111111111111111'", "B'0'"]),
    "r4": ("int4range", ["'[1,10)'", "'empty'", "'(,)'", "'[-2147483648,2147483647)'"]),
    "rtz": ("tstzrange", ["'[2024-03-10 00:00+00,infinity)'", "'empty'", "'(,2024-01-01 00:00+05)'",
                          "'[2024-03-10 00:00:00.000001+00,2024-03-11 00:00+00]'"]),
    "mr": ("int4multirange", ["'{[1,3), [5,7)}'", "'{}'", "'{(,)}'", "'{[1,2]}'"]),
    "pt": ("point", ["'(1.5,-2)'", "'(0,0)'", "'(1e300,-1e-300)'", "'(NaN,Infinity)'"]),
    "bx": ("box", ["'((0,0),(1,1))'", "'((-1,-1),(1,1))'", "'((1e10,1),(0,0))'", "'((0.5,0.5),(0.5,0.5))'"]),
    "tsv": ("tsvector", ["'a fat cat'", "''", "'x:1A,2B y''s'", "'ü'"]),
    "tsq": ("tsquery", ["'fat & (rat | cat)'", "'x'", "'!a <-> b'", "'ü:*'"]),
    "lsn": ("pg_lsn", ["'16/B374D848'", "'0/0'", "'FFFFFFFF/FFFFFFFF'", "'1/1'"]),
    "comp": ("pair", ["ROW(1, 'a b')::pair", "ROW(NULL, NULL)::pair", "ROW(-1, '\"q\"')::pair", "ROW(0, '')::pair"]),
    "ia": ("int4[]", ["'{1,NULL,3}'", "'{}'", "'{-2147483648,2147483647}'", "'{NULL}'"]),
    "ta": ("text[]", ["'{a,\"b c\",NULL,\"NULL\"}'", "'{}'", "'{\"\",\"q\\\"\\\\\"}'", "'{ü}'"]),
    "fa": ("float8[]", ["'{1.5,-0.25}'", "'{NaN,Infinity,-Infinity}'", "'{}'", "'{0.1}'"]),
    "da": ("date[]", ["'{2024-03-10,NULL}'", "'{4714-11-24 BC}'", "'{5874897-12-31}'", "'{}'"]),
    "tsa": ("timestamptz[]", ["'{\"2024-03-10 09:30:00+05:30\"}'", "'{\"4714-11-24 00:00:00+00 BC\"}'", "'{}'",
                              "'{NULL,\"2000-01-01 00:00:00.000001+00\"}'"]),
    "ma": ("money[]", ["'{1.50,-2}'", "'{}'", "'{92233720368547758.07}'", "'{NULL}'"]),
    "oa": ("oid[]", ["'{4294967295,0}'", "'{}'", "'{1}'", "'{NULL}'"]),
    "na": ("numeric[]", ["'{1.50,NaN}'", "'{}'", "'{-1e-30}'", "'{NULL}'"]),
    "ipa": ("inet[]", ["'{10.0.0.1,::1}'", "'{}'", "'{NULL}'", "'{192.168.0.1/24}'"]),
}

# the server's text of each column is its output function's, except where noted
TRUTH_EXPRS = {
    "m": "m::numeric::text",  # money's output is formatted by lc_monetary ($1,234.50): its amount
    "ma": "ma::numeric[]::text",
    "x": "x::text",  # xml's output function drops a standard declaration: the stored text keeps it
}

# what each column becomes (types already exact before the fix keep theirs and their bytes)
EXPECTED_TYPES = {
    "i2": pa.int16(), "i4": pa.int32(), "i8": pa.int64(), "f4": pa.float32(), "f8": pa.float64(),
    "n": pa.decimal128(20, 4), "wide": pa.decimal256(50, 10), "nfree": pa.string(), "m": pa.decimal128(19, 2),
    "o": pa.uint32(), "xi": pa.uint32(), "x8": pa.uint64(), "b": pa.bool_(), "d": pa.date32(),
    "ts": pa.timestamp("us"), "tstz": pa.timestamp("us", tz="UTC"), "tm": pa.time64("us"),
    "raw": pa.binary(), "u": pa.binary(16), "ia": pa.list_(pa.int32()), "ta": pa.list_(pa.string()),
    "fa": pa.list_(pa.float64()), "da": pa.list_(pa.date32()), "tsa": pa.list_(pa.timestamp("us", tz="UTC")),
    "ma": pa.list_(pa.decimal128(19, 2)), "oa": pa.list_(pa.uint32()),
    "dom": pa.int32(),
}  # every other column: its text (pa.string())

SOURCE_TYPES = {"qc": "char", "dom": "int4", "ch": "bpchar", "ia": "int4[]", "r4": "int4range",
                "rtz": "tstzrange", "m": "money", "e": "mood", "comp": "pair", "x": "xml"}


def create_torture_table(url: str) -> None:
    ddl = ", ".join(f"{c} {t}" for c, (t, _) in COLUMNS.items())
    rows = []
    for i in range(4):
        rows.append(f"({i + 1}, '{DAY}', " + ", ".join(f"({vals[i]})::{t}" for t, vals in COLUMNS.values()) + ")")
    rows.append(f"(5, '{DAY}', " + ", ".join("NULL" for _ in COLUMNS) + ")")
    sql(url, *SETUP, f"CREATE TABLE torture (id int8 PRIMARY KEY, day date, {ddl})",
        "INSERT INTO torture VALUES " + ", ".join(rows))


def torture_truth(url: str) -> dict[str, list[str | None]]:
    return server_text(url, "torture", {c: TRUTH_EXPRS.get(c, c) for c in COLUMNS})


QUERY = "SELECT * FROM torture WHERE day >= :partition_start AND day < :partition_end"


def test_every_type_is_exact_cell_by_cell(pg_database: str, store: SnapshotStore) -> None:
    create_torture_table(pg_database)
    outcome = take_snapshot(make_catalog(pg_database, QUERY), "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.num_rows == 5

    types = {f.name: f.type for f in table.schema}
    for column in COLUMNS:
        assert types[column] == EXPECTED_TYPES.get(column, pa.string()), column
    # not one column holds the driver's binary wire encoding
    assert not [n for n, t in types.items() if pa.types.is_binary(t) and n != "raw"]

    truth = torture_truth(pg_database)
    assert mismatches(table, truth) == []
    # spot checks of the failures, in plain Python
    plain = [c for c in table.column_names if c not in ("d", "ts", "tstz", "da", "tsa")]  # BC: no Python date
    rows = table.select(plain).to_pylist()
    assert rows[0]["m"] == Decimal("12.34") and rows[2]["m"] == Decimal("92233720368547758.07")
    assert rows[1]["o"] == 4294967295
    assert rows[0]["x"] == '<?xml version="1.0" encoding="UTF-8"?><a>x</a>'
    assert (rows[0]["ip"], rows[0]["bt"], rows[0]["ttz"], rows[0]["r4"]) == ("192.168.0.1/24", "1010", "13:14:15+05:30", "[1,10)")
    assert rows[0]["ch"] == "ab  "  # char(n) keeps its padding, as the server prints it
    assert all(v is None for k, v in rows[4].items() if k not in ("id", "day"))
    assert all(table.column(c).null_count == 1 for c in COLUMNS)

    # the manifest records each column's database type
    recorded = {c.name: c.source_type for c in outcome.result.manifest.schema}
    assert {c: recorded[c] for c in SOURCE_TYPES} == SOURCE_TYPES


def test_the_comparison_catches_a_value_off_by_one_unit(pg_database: str, store: SnapshotStore) -> None:
    """The cell-by-cell comparison can fail: one unit off in any of these columns is reported."""
    create_torture_table(pg_database)
    take_snapshot(make_catalog(pg_database, QUERY), "snap", DAY, store)
    table = store.read_table("snap", DAY)
    truth = torture_truth(pg_database)
    assert mismatches(table, truth) == []

    def off_by_one(column: str, row: int, value: Any) -> list[str]:
        arr = table.column(column).combine_chunks()
        values = arr.to_pylist() if not pa.types.is_temporal(arr.type) else None
        if values is None:  # temporal: one unit (a day, a microsecond) more, without Python datetimes
            raw_type = pa.int32() if pa.types.is_date32(arr.type) else pa.int64()
            raw = arr.view(raw_type).to_pylist()
            raw[row] += 1
            changed = pa.array(raw, raw_type).view(arr.type)
        else:
            values[row] = value(values[row])
            changed = pa.array(values, arr.type)
        broken = table.set_column(table.schema.get_field_index(column), column, changed)
        return mismatches(broken, {column: truth[column]})

    assert off_by_one("i8", 2, lambda v: v - 1)
    assert off_by_one("m", 0, lambda v: v + Decimal("0.01"))
    assert off_by_one("n", 1, lambda v: v + Decimal("0.0001"))
    assert off_by_one("o", 1, lambda v: v - 1)
    assert off_by_one("f8", 0, lambda v: math.nextafter(v, 1))
    assert off_by_one("f4", 0, lambda v: v + 2**-23)
    assert off_by_one("ts", 0, None)
    assert off_by_one("tstz", 1, None)
    assert off_by_one("d", 1, None)
    assert off_by_one("tm", 2, None)
    assert off_by_one("ia", 0, lambda v: [v[0] + 1, *v[1:]])
    assert off_by_one("t", 0, lambda v: v[:-1] + "✗")
    assert off_by_one("raw", 0, lambda v: v[:-1] + b"\xfe")


# ---------------------------------------------------------------- values no snapshot type can hold

FAILURES = [
    ("date", "'infinity'", "infinity or -infinity"),
    ("date", "'-infinity'", "infinity or -infinity"),
    ("timestamp", "'infinity'", "infinity, -infinity"),
    ("timestamp", "'-infinity'", "infinity, -infinity"),
    ("timestamptz", "'infinity'", "infinity, -infinity"),
    ("timestamp", "'294276-12-31 23:59:59.999999'", "after 294247-01-10"),
    ("time", "'24:00:00'", "24:00:00"),
    ("int4[]", "'{{1,2},{3,4}}'", "more than one dimension"),
    ("int4[]", "'[0:1]={1,2}'", "subscripts do not start at 1"),
    ("text[]", "'{{a},{b}}'", "more than one dimension"),
    ("timestamptz[]", "'{infinity}'", "infinity, -infinity"),
    ("date[]", "'{-infinity}'", "infinity or -infinity"),
    ("numeric(10,2)", "'NaN'", "cannot hold exactly"),
]


@pytest.mark.parametrize(("pg_type", "value", "reason"), FAILURES, ids=[f"{t} {v}" for t, v, _ in FAILURES])
def test_values_no_arrow_type_holds_fail_naming_the_column(
    pg_database: str, store: SnapshotStore, pg_type: str, value: str, reason: str
) -> None:
    sql(pg_database, f"CREATE TABLE odd (id int PRIMARY KEY, day date, \"Odd col\" {pg_type})",
        f"INSERT INTO odd VALUES (1, '{DAY}', NULL), (2, '{DAY}', {value}), (3, '{DAY}', NULL)")
    query = 'SELECT id, "Odd col" FROM odd WHERE day >= :partition_start AND day < :partition_end'
    with pytest.raises(SourceError) as caught:
        take_snapshot(make_catalog(pg_database, query), "snap", DAY, store,
                      sleep=lambda s: pytest.fail("not transient"))
    message = str(caught.value)
    assert "source pg" in message and "'Odd col'" in message and reason in message
    if "numeric" not in pg_type:
        source_type = pg_type.replace("[]", "")
        assert f"({source_type}" in message and '"Odd col"::text' in message
    assert store.partitions("snap") == [] or store.versions("snap", DAY) == []  # nothing published

    # the cast the message advises keeps the server's exact text
    take_snapshot(make_catalog(pg_database, query.replace('"Odd col"', '"Odd col"::text AS "Odd col"', 1)),
                  "snap", DAY, store)
    table = store.read_table("snap", DAY)
    assert table.schema.field("Odd col").type == pa.string()
    assert mismatches(table, server_text(pg_database, "odd", {"Odd col": '"Odd col"::text'})) == []


# ---------------------------------------------------------------- versions of exact snapshots keep their ids

PIN_SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE TABLE pin (id int8 PRIMARY KEY, day date, i2 int2, i4 int4, f4 real, f8 float8, b bool, t text,"
    " vc varchar(10), ch char(4), nm name, raw bytea, u uuid, j json, jb jsonb, ts timestamp, tstz timestamptz,"
    " tm time, n numeric(15,2), nf numeric, iv interval, ia int4[], ta text[], e mood)",
    "INSERT INTO pin VALUES"
    " (1, '2024-03-10', -32768, 2147483647, 1.5, 0.1, true, 'ünï', 'abc', 'ab', 'nm', '\\x00ff',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"z\":  1}', '{\"b\": [1, 2.5]}', '2024-03-10 13:14:15.123456',"
    " '2024-03-10 09:30:00+05:30', '23:59:59.999999', 1234567890123.45, 3.14159,"
    " '1 year 2 mons 3 days 04:05:06.789', '{1,NULL,3}', '{a,\"b c\",NULL}', 'happy'),"
    " (2, '2024-03-10', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " (3, '2024-03-10', 0, 0, 'NaN', '-Infinity', false, '', '', '', '', '', '00000000-0000-0000-0000-000000000000',"
    " '[]', '{}', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00', '00:00:00', -0.01, -1e-30, '-00:00:01', '{}',"
    " '{}', 'sad')",
]
# computed with the source as it was before the exact-types change (commit 1425f2d), same pyarrow and
# writer settings (those of that time: dictionary pages and statistics for every column, decimals as
# fixed-length bytes): the types that were already exact keep their Arrow types and Parquet bytes
PINNED_VERSION = "dba94d472d98997c5f88"
EARLIER_WRITER = WriterSettings(dictionary="all", statistics="all", decimal_storage="fixed")
# the same rows under today's default writer settings: a change of these bytes is a new version of
# every snapshot, so it must be deliberate (and recorded in the manifest's ``writer``)
PINNED_VERSION_DEFAULT_WRITER = "27513c098dbf34c9c32d"


def test_snapshots_that_were_exact_keep_their_version_id(pg_database: str, tmp_path: Path) -> None:
    sql(pg_database, *PIN_SETUP)
    catalog = make_catalog(pg_database, "SELECT * FROM pin WHERE day >= :partition_start AND day < :partition_end")
    earlier = take_snapshot(catalog, "snap", DAY, SnapshotStore(tmp_path / "earlier", settings=EARLIER_WRITER))
    assert earlier.result.manifest.version == PINNED_VERSION
    assert earlier.result.manifest.writer["decimal_storage"] == "fixed"
    today = take_snapshot(catalog, "snap", DAY, SnapshotStore(tmp_path / "today"))
    assert today.result.manifest.version == PINNED_VERSION_DEFAULT_WRITER
    # the same types and values read back (repr: NaN equals NaN)
    back = [SnapshotStore(tmp_path / side).read_table("snap", DAY) for side in ("today", "earlier")]
    assert back[0].schema == back[1].schema
    assert {n: [repr(v) for v in c.to_pylist()] for n, c in zip(back[0].column_names, back[0].columns)} == \
        {n: [repr(v) for v in c.to_pylist()] for n, c in zip(back[1].column_names, back[1].columns)}
