"""SQLSTATE facts shared by the engines that speak the PostgreSQL protocol (postgres, redshift).

Which errors a fresh attempt may get past, which mean a failed login, and the hint put before the
server's text; :func:`sqlstate_error` builds the one error text both engines give.
"""

from __future__ import annotations

from snapshot_platform.sources.base import SourceError

# SQLSTATEs after which a fresh attempt from the partition's start may succeed.
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53300"}
TRANSIENT_CLASSES = {"08"}
AUTH_SQLSTATES = {"28P01", "28000"}
MESSAGES = {
    "57014": "cancelled by the statement timeout ({timeout:g}s)",
    "25006": "the query tried to write; snapshot sessions are read-only",
    "42501": "permission denied",
}


def is_transient(sqlstate: str | None) -> bool:
    return bool(sqlstate) and (sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_CLASSES)


def sqlstate_error(
    source: str, stage: str, text: str, sqlstate: str | None, messages: dict[str, str], timeout_s: float,
    transient: bool,
) -> SourceError:
    """``source NAME (stage): hint: server text [SQLSTATE xxxxx]`` (``text`` already redacted)."""
    hint = messages.get(sqlstate or "", "")
    if hint:
        hint = hint.format(timeout=timeout_s) + ": "
    return SourceError(
        f"source {source} ({stage}): {hint}{text}" + (f" [SQLSTATE {sqlstate}]" if sqlstate else ""),
        transient=transient,
        code=sqlstate,
    )
