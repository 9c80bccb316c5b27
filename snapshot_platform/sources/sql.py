"""Find and rewrite the named window parameters (``:partition_start``, ``:partition_end``) of a query.

The catalog's queries are written once, with ``:name`` placeholders, and run on engines whose drivers
spell placeholders differently (``?``, ``%s``, ``$1``, ``@name``). This module scans the SQL text
while skipping string literals, quoted identifiers, comments and PostgreSQL ``::`` casts, so that a
colon inside ``'10:30'`` or ``x::date`` is never mistaken for a parameter. Values are never put into
the text: the rewrite only changes the placeholder's spelling, and the driver binds the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

WINDOW_PARAMS = ("partition_start", "partition_end")
# pins a query's tables to the read's start, on the engines whose registry entry allows it
SNAPSHOT_TIME_PARAM = "snapshot_time"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = re.compile(r"['\"`\-/$:]")  # what may start a literal, comment or parameter


@dataclass(frozen=True)
class Placeholder:
    name: str
    start: int  # offset of the colon
    end: int  # offset just past the name


def find_placeholders(sql: str, backslash_escapes: bool = False) -> list[Placeholder]:
    """Every ``:name`` placeholder outside literals, identifiers, comments and casts.

    ``backslash_escapes``: a backslash escapes the next character inside '...' (MySQL, BigQuery,
    Snowflake). Standard SQL, PostgreSQL and SQLite treat it as an ordinary character, except in
    PostgreSQL's ``E'...'`` strings, which are recognised either way.
    """
    found: list[Placeholder] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'" or c == '"' or c == "`":
            # quoted literal or identifier; a doubled quote is an escaped quote
            escape_string = c == "'" and (
                backslash_escapes
                or (i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_")))
            )
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                if escape_string and sql[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                j += 1
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif sql.startswith("$", i):
            # PostgreSQL dollar quoting: $tag$ ... $tag$
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:
                tag = m.group(0)
                j = sql.find(tag, i + len(tag))
                i = n if j < 0 else j + len(tag)
            else:
                i += 1
        elif c == ":":
            if i + 1 < n and sql[i + 1] == ":":
                i += 2  # a cast, ``x::date``
                continue
            if i > 0 and sql[i - 1] == ":":
                i += 1
                continue
            m = _IDENT.match(sql, i + 1)
            if m:
                found.append(Placeholder(m.group(0), i, m.end()))
                i = m.end()
            else:
                i += 1
        else:  # nothing starts here: on to the next character that may start something
            m = _SPECIAL.search(sql, i + 1)
            i = m.start() if m else n
    return found


def rewrite(sql: str, spell: Callable[[str, int], str], backslash_escapes: bool = False) -> tuple[str, list[str]]:
    """Replace each placeholder with ``spell(name, ordinal)``; return the SQL and the names in order."""
    out: list[str] = []
    names: list[str] = []
    pos = 0
    for ordinal, ph in enumerate(find_placeholders(sql, backslash_escapes)):
        out.append(sql[pos : ph.start])
        out.append(spell(ph.name, ordinal))
        names.append(ph.name)
        pos = ph.end
    out.append(sql[pos:])
    return "".join(out), names


def quote_identifier(name: str) -> str:
    """ANSI-quote an identifier (column names in the ORDER BY we add); quotes inside are doubled."""
    return '"' + name.replace('"', '""') + '"'
