"""Shared fixtures for the snapshot_platform tests.

- ``pg_server``: the PostgreSQL server at 127.0.0.1:5432 (user postgres, trust auth). When it is not
  reachable the test is skipped locally, and *fails* under CI (``CI=true``): CI never skips it.
- ``pg_database``: a fresh, uniquely named database on that server, dropped afterwards; yields its URL.
- ``platform_env``: points every home of the platform (storage, platform home, ``DAGSTER_HOME``) into
  ``tmp_path``, so no test touches the real home folder; yields the paths.
- ``write_catalog``: writes a catalog document (a dict or YAML text) into ``tmp_path``; returns its path.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_URL = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the test PostgreSQL server; skip (fail under CI) when it is unreachable."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PG_ADMIN_URL


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh database ``sp_test_<uuid8>``, dropped (with its leftover connections) afterwards."""
    import psycopg

    name = f"sp_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class PlatformEnv:
    home: Path  # SNAPSHOT_PLATFORM_HOME
    storage: Path  # SNAPSHOT_PLATFORM_STORAGE_URL
    dagster_home: Path  # DAGSTER_HOME (with a dagster.yaml that disables telemetry)

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ with these settings, for subprocesses (monkeypatch has already set them)."""
        return {**os.environ, **extra}


@pytest.fixture
def platform_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformEnv:
    """Every platform and Dagster home in ``tmp_path``; the catalog variable is unset (the demo's)."""
    env = PlatformEnv(tmp_path / "sp_home", tmp_path / "storage", tmp_path / "dagster_home")
    for p in (env.home, env.storage, env.dagster_home):
        p.mkdir(parents=True)
    (env.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("SNAPSHOT_PLATFORM_HOME", str(env.home))
    monkeypatch.setenv("SNAPSHOT_PLATFORM_STORAGE_URL", str(env.storage))
    monkeypatch.setenv("DAGSTER_HOME", str(env.dagster_home))
    monkeypatch.delenv("SNAPSHOT_PLATFORM_CATALOG", raising=False)
    return env


@pytest.fixture
def write_catalog(tmp_path: Path) -> Callable[..., Path]:
    """``write_catalog(doc, name="snapshots.yaml")``: write a dict (as YAML) or YAML text; return the path."""

    def write(doc: dict[str, Any] | str, name: str = "snapshots.yaml") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    return write
