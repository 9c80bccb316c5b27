"""Database URLs (``scheme://user:password@host:port/database?param=value``), read without leaking.

A password holding an unencoded ``#``, ``/``, ``?`` or ``@`` makes a URL ambiguous: a parser takes
part of the password for the host, the port or the path, and its error quotes that part (Python's
``Port could not be cast to integer value as 'hunter'``, libpq's ``could not translate host name``).
:func:`split_url` refuses such a URL with a message that quotes nothing of it, before any driver or
parser sees it. :func:`literal_password` finds a password wherever a URL can carry one: the userinfo,
a ``?password=`` query parameter, or a libpq keyword string (``host=... password=...``).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

# query parameters (libpq, MySQL clients) whose value is a secret
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword", "sslkey_password"})
_KEYWORD = re.compile(r"(?:^|\s)([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")

ENCODE = (
    "cannot be parsed: a user or password holding '#', '/', '?', '@' or ':' must be percent-encoded "
    "(%23, %2F, %3F, %40, %3A); nothing of the URL is shown here"
)


class UrlError(ValueError):
    """A URL that cannot be used. The message never holds any part of the URL."""


def is_keyword_string(text: str) -> bool:
    """A libpq keyword/value connection string (``host=db dbname=prod``) rather than a URL."""
    return "://" not in text and bool(_KEYWORD.search(text))


def problem(url: str) -> str | None:
    """What is wrong with ``url``'s shape, in words that quote nothing of it; None when it parses."""
    if "://" not in url:
        if is_keyword_string(url):
            return "is a libpq keyword string (host=... dbname=...); write it as a URL (postgresql://user@host:5432/db)"
        return "is not a URL (scheme://user@host:port/database)"
    rest = url.split("://", 1)[1]
    authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]
    after = rest[len(authority):]
    path, _, query = after.partition("?")
    if "#" in after or authority.count("@") > 1 or "@" in path or ("@" in query and "@" not in authority):
        return ENCODE
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError quoting the text after ':')
    except ValueError:
        return ENCODE
    return None


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, or :class:`UrlError` (quoting nothing of the URL) when it is ambiguous."""
    found = problem(url)
    if found:
        raise UrlError(found)
    return urlsplit(url)


def secret_params(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (or keywords of a keyword string) that hold secrets."""
    if "://" not in url:
        pairs = [(k, v.strip("'")) for k, v in _KEYWORD.findall(url)]
    else:
        pairs = parse_qsl(url.split("?", 1)[1] if "?" in url else "", keep_blank_values=True)
    return {k: v for k, v in pairs if k.lower() in SECRET_PARAMS}


def literal_password(url: str) -> bool:
    """True when ``url`` carries a password: in its userinfo, as ``?password=``, or as a keyword."""
    if any(v for v in secret_params(url).values()):
        return True
    if "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    if "@" in rest:  # userinfo up to the last '@': a ':' in it is a password, however malformed the rest
        userinfo = rest.rsplit("@", 1)[0]
        if ":" in userinfo and userinfo.split(":", 1)[1]:
            return True
    return False


def secret_fragments(url: str) -> list[str]:
    """Every string of ``url`` that may be a secret, for redaction: the whole URL, its userinfo and
    password (raw and decoded, taken up to the last '@' too), and secret query parameters."""
    found = [url]
    if "://" in url:
        rest = url.split("://", 1)[1]
        if "@" in rest:
            userinfo = rest.rsplit("@", 1)[0]
            found.append(userinfo)
            if ":" in userinfo:
                pw = userinfo.split(":", 1)[1]
                found += [pw, unquote(pw)]
        try:
            parts = urlsplit(url)
            found += [parts.password or "", unquote(parts.password or "")]
        except ValueError:
            pass
    found += list(secret_params(url).values())
    return [f for f in found if f]
