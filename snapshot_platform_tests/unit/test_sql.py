"""Unit tests of the placeholder scanner: ``find_placeholders`` and ``rewrite``.

A colon that is not a placeholder (a cast, a time literal, a comment, a quoted identifier, a
dollar-quoted body) must never be rewritten, and every real placeholder must be found.
"""

from __future__ import annotations

import pytest

from snapshot_platform.sources.sql import Placeholder, find_placeholders, quote_identifier, rewrite

WINDOW = "d >= :partition_start AND d < :partition_end"


def names(sql: str) -> list[str]:
    return [p.name for p in find_placeholders(sql)]


def qmark(name: str, ordinal: int) -> str:
    return "?"


def dollar(name: str, ordinal: int) -> str:
    return f"${ordinal + 1}"


# ------------------------------------------------------------------ the basics


def test_finds_window_placeholders_in_order_with_offsets():
    sql = f"SELECT * FROM t WHERE {WINDOW}"
    found = find_placeholders(sql)
    assert [p.name for p in found] == ["partition_start", "partition_end"]
    for p in found:
        assert sql[p.start] == ":"
        assert sql[p.start + 1 : p.end] == p.name
    assert found[0] == Placeholder("partition_start", sql.index(":partition_start"),
                                   sql.index(":partition_start") + len(":partition_start"))


def test_rewrite_returns_sql_and_names_in_order():
    sql = f"SELECT * FROM t WHERE {WINDOW} AND e >= :partition_start"
    out, got = rewrite(sql, dollar)
    assert out == "SELECT * FROM t WHERE d >= $1 AND d < $2 AND e >= $3"
    assert got == ["partition_start", "partition_end", "partition_start"]


def test_rewrite_spell_receives_name_and_ordinal():
    calls = []

    def spell(name: str, ordinal: int) -> str:
        calls.append((name, ordinal))
        return f"@{name}"

    out, _ = rewrite(f"SELECT 1 WHERE {WINDOW}", spell)
    assert calls == [("partition_start", 0), ("partition_end", 1)]
    assert out == "SELECT 1 WHERE d >= @partition_start AND d < @partition_end"


def test_sql_without_placeholders_is_unchanged():
    sql = "SELECT a, b FROM t WHERE c = 1"
    assert find_placeholders(sql) == []
    assert rewrite(sql, qmark) == (sql, [])


def test_placeholder_at_very_start_and_end_of_text():
    assert names(":partition_start") == ["partition_start"]
    out, _ = rewrite("x <:partition_end", qmark)
    assert out == "x <?"


def test_placeholder_name_stops_at_non_identifier_characters():
    sql = "WHERE d >= (:partition_start) AND d < :partition_end;"
    assert names(sql) == ["partition_start", "partition_end"]
    assert rewrite(sql, qmark)[0] == "WHERE d >= (?) AND d < ?;"


def test_colon_not_followed_by_an_identifier_is_not_a_placeholder():
    # ``:1``, ``: x`` and a trailing colon are not named parameters
    assert names("SELECT a[1:2], x : y, 'a' ||':'|| b, z :") == []
    assert names("SELECT :1") == []


# ------------------------------------------------------------------ casts


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT x::date FROM t", []),
        ("SELECT x::timestamptz, y :: int FROM t", []),
        ("SELECT '2024-01-01'::date", []),
        ("WHERE d >= :partition_start::date AND d < :partition_end::date",
         ["partition_start", "partition_end"]),
        ("WHERE d::date >= :partition_start", ["partition_start"]),
    ],
)
def test_casts_are_not_placeholders(sql, expected):
    assert names(sql) == expected


def test_rewrite_keeps_casts_after_a_placeholder():
    out, got = rewrite("WHERE d >= :partition_start::date AND x::text = 'a'", dollar)
    assert out == "WHERE d >= $1::date AND x::text = 'a'"
    assert got == ["partition_start"]


# ------------------------------------------------------------------ string literals


@pytest.mark.parametrize(
    "literal",
    [
        "'10:30'",
        "'10:30:00'",
        "':partition_start'",
        "'x :foo y'",
        "'it''s :foo'",  # a doubled quote is an escaped quote, the literal goes on
        "''",
        "E'it\\'s :foo'",  # PostgreSQL escape string: backslash escapes the quote
    ],
)
def test_string_literals_hide_colons(literal):
    sql = f"SELECT {literal} AS v FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]
    out, _ = rewrite(sql, qmark)
    assert out == f"SELECT {literal} AS v FROM t WHERE d >= ? AND d < ?"


def test_literal_time_and_placeholder_side_by_side():
    sql = "WHERE t >= :partition_start AND to_char(t, 'HH24:MI') <> '10:30' AND t < :partition_end"
    out, got = rewrite(sql, qmark)
    assert got == ["partition_start", "partition_end"]
    assert out == "WHERE t >= ? AND to_char(t, 'HH24:MI') <> '10:30' AND t < ?"


def test_unterminated_literal_hides_the_rest():
    assert names("SELECT 'abc :partition_start") == []


def test_standard_string_with_trailing_backslash_ends_at_its_quote():
    """In standard SQL, PostgreSQL (standard_conforming_strings, the default since 9.1) and SQLite,
    a backslash inside '...' is an ordinary character: ``'C:\\'`` is a complete literal.

    The scanner treats ``\\'`` as an escaped quote everywhere (the rule of MySQL, BigQuery and
    Snowflake, and of PostgreSQL's ``E'...'`` strings), so it believes the literal goes on and misses
    the window parameters that follow: a valid PostgreSQL or SQLite query is rejected by the catalog.
    """
    sql = "SELECT * FROM files WHERE root = 'C:\\' AND d >= :partition_start AND d < :partition_end"
    assert names(sql) == ["partition_start", "partition_end"]


# ------------------------------------------------------------------ quoted identifiers


@pytest.mark.parametrize(
    "ident",
    ['"weird:col"', '"a"":b"', '"::partition_start"', "`my:col`", '":partition_end"'],
)
def test_quoted_identifiers_hide_colons(ident):
    sql = f"SELECT {ident} FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]
    assert rewrite(sql, qmark)[0] == f"SELECT {ident} FROM t WHERE d >= ? AND d < ?"


# ------------------------------------------------------------------ comments


def test_line_comment_hides_placeholders_until_end_of_line():
    sql = (
        "SELECT * FROM t -- filtered by :foo and :partition_end\n"
        "WHERE d >= :partition_start AND d < :partition_end"
    )
    assert names(sql) == ["partition_start", "partition_end"]
    out, _ = rewrite(sql, qmark)
    assert "-- filtered by :foo and :partition_end\n" in out
    assert out.endswith("WHERE d >= ? AND d < ?")


def test_line_comment_at_end_of_text_without_newline():
    assert names(f"SELECT 1 WHERE {WINDOW} -- :foo") == ["partition_start", "partition_end"]


def test_block_comment_hides_placeholders():
    sql = f"SELECT /* :foo, '10:30', x::date */ * FROM t WHERE {WINDOW} /* :bar */"
    assert names(sql) == ["partition_start", "partition_end"]
    out, _ = rewrite(sql, qmark)
    assert "/* :foo, '10:30', x::date */" in out and "/* :bar */" in out


def test_multiline_block_comment():
    sql = "SELECT *\n/*\n  old filter:\n  WHERE x = :foo\n*/\nFROM t WHERE " + WINDOW
    assert names(sql) == ["partition_start", "partition_end"]


def test_unterminated_block_comment_hides_the_rest():
    assert names("SELECT 1 /* :partition_start") == []


def test_comment_markers_inside_literals_are_not_comments():
    sql = f"SELECT '--', '/*' FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]


def test_quotes_inside_comments_do_not_open_literals():
    sql = f"SELECT 1 -- it's\nFROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]
    sql = f"SELECT 1 /* don't */ FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]


# ------------------------------------------------------------------ dollar quoting


@pytest.mark.parametrize(
    "body",
    [
        "$$ :foo '10:30 $$",
        "$fn$ SELECT :foo $fn$",
        "$a$ $$ :foo $$ $a$",  # an inner $$ does not close a tagged quote
        "$_x1$ it's :foo $_x1$",
    ],
)
def test_dollar_quoted_bodies_hide_placeholders(body):
    sql = f"SELECT {body} AS v FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]
    assert rewrite(sql, qmark)[0] == f"SELECT {body} AS v FROM t WHERE d >= ? AND d < ?"


def test_positional_dollar_parameters_are_not_dollar_quotes():
    sql = f"SELECT $1, $2 FROM t WHERE {WINDOW}"
    assert names(sql) == ["partition_start", "partition_end"]


def test_unterminated_dollar_quote_hides_the_rest():
    assert names("SELECT $$ :partition_start") == []


# ------------------------------------------------------------------ unknown parameters


def test_unknown_parameters_are_reported_by_name():
    sql = f"SELECT * FROM t WHERE {WINDOW} AND region = :region AND x = :limit_1"
    assert names(sql) == ["partition_start", "partition_end", "region", "limit_1"]
    out, got = rewrite(sql, dollar)
    assert got == ["partition_start", "partition_end", "region", "limit_1"]
    assert out.endswith("region = $3 AND x = $4")


def test_rewrite_never_inserts_values_only_spellings():
    hostile = "'; DROP TABLE t; --"
    out, _ = rewrite(f"SELECT 1 WHERE {WINDOW}", lambda n, i: "?")
    assert hostile not in out and out.count("?") == 2


# ------------------------------------------------------------------ quote_identifier


@pytest.mark.parametrize(
    "name, quoted",
    [("customer_id", '"customer_id"'), ('we"ird', '"we""ird"'), ("a b", '"a b"'), ('"', '""""')],
)
def test_quote_identifier_doubles_inner_quotes(name, quoted):
    assert quote_identifier(name) == quoted
    # the quoted form scans as one identifier: no placeholder leaks out of it
    assert names(f"SELECT {quote_identifier(name + ' :foo')}") == []
