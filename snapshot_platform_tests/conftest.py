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


# ---------------------------------------------------------------- source engines' test peers
# MariaDB on this machine; moto's server (AWS Secrets Manager, Redshift GetClusterCredentials);
# fakesnow's server (Snowflake); the local-bigquery emulator (BigQuery). Each is skipped when it is
# missing, and fails the test under CI=true: CI never skips them.

MYSQL_HOST = "127.0.0.1"
MYSQL_PORT = 3306
MYSQL_USER = "root"
REPO_ROOT = Path(__file__).resolve().parent.parent


def missing_peer(message: str) -> None:
    """Skip locally; fail under CI (a missing server must not pass as a skipped test there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def mysql_url(database: str, user: str = MYSQL_USER, password: str | None = None) -> str:
    auth = user if password is None else f"{user}:{password}"
    return f"mysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{database}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mysql_server() -> dict[str, Any]:
    """The MariaDB/MySQL server at 127.0.0.1:3306 (root, no password), as PyMySQL connect arguments."""
    import pymysql

    args = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": MYSQL_USER, "password": "", "autocommit": True}
    try:
        pymysql.connect(**args, connect_timeout=5).close()
    except pymysql.err.MySQLError as exc:
        missing_peer(f"MariaDB/MySQL at {MYSQL_HOST}:{MYSQL_PORT} is not reachable: {exc}")
    return args


@pytest.fixture
def mysql_database(mysql_server: dict[str, Any]) -> Iterator[str]:
    """A fresh database ``sp_test_<uuid8>`` on the MariaDB server, dropped afterwards; yields its URL."""
    import pymysql

    name = f"sp_test_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(**mysql_server) as conn:
        conn.cursor().execute(f"CREATE DATABASE `{name}`")
    try:
        yield mysql_url(name)
    finally:
        with pymysql.connect(**mysql_server) as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    region: str = "us-east-1"

    def environ(self) -> dict[str, str]:
        """AWS settings pointing boto3 at this server (dummy keys: moto accepts any)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto in server mode on a free localhost port (shared by the session)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        missing_peer(f"moto[server] is not installed: {exc}")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """This process's AWS settings pointed at the moto server, and the in-memory secrets forgotten."""
    from snapshot_platform import secrets

    for k, v in moto_server.environ().items():
        monkeypatch.setenv(k, v)
    secrets.invalidate()
    yield moto_server
    secrets.invalidate()


@pytest.fixture(scope="session")
def fakesnow_server() -> Iterator[dict[str, Any]]:
    """fakesnow's Snowflake-compatible HTTP server on localhost: {host, port, protocol, user, password}."""
    try:
        import fakesnow
    except ImportError as exc:
        missing_peer(f"fakesnow is not installed: {exc}")
    with fakesnow.server() as kwargs:
        yield {k: kwargs[k] for k in ("host", "port", "protocol", "user", "password", "account")}


@dataclass(frozen=True)
class BigQueryEmulator:
    api_endpoint: str
    storage_api_endpoint: str
    project: str
    dataset: str

    def client(self) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=self.api_endpoint))


def bigquery_emulator_python() -> Path | None:
    configured = os.environ.get("SNAPSHOT_PLATFORM_BQ_EMULATOR_PYTHON")
    candidate = Path(configured) if configured else REPO_ROOT / ".venv-bigquery" / "bin" / "python"
    return candidate if candidate.exists() else None


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """local-bigquery (REST + Storage Read API over gRPC) on free localhost ports, offline.

    It runs in its own venv (``make bigquery-emulator``; or $SNAPSHOT_PLATFORM_BQ_EMULATOR_PYTHON).
    """
    import subprocess
    import time
    import urllib.request

    python = bigquery_emulator_python()
    if python is None:
        missing_peer("the BigQuery emulator venv is missing: run `make bigquery-emulator`")
    rest, grpc_port = free_port(), free_port()
    data = tmp_path_factory.mktemp("bigquery_emulator")
    log = open(data / "emulator.log", "wb")
    proc = subprocess.Popen(
        [str(python), str(REPO_ROOT / "snapshot_platform_tests" / "bigquery_emulator.py"), "serve",
         "--host", "127.0.0.1", "--port", str(rest), "--grpc-port", str(grpc_port),
         "--project", "sp-test", "--dataset", "ds", "--data-dir", str(data / "data")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{rest}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/bigquery/v2/projects/sp-test/datasets", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    missing_peer("the BigQuery emulator did not start: "
                                 + (data / "emulator.log").read_text(errors="replace")[-2000:])
                time.sleep(0.3)
        yield BigQueryEmulator(url, f"127.0.0.1:{grpc_port}", "sp-test", "ds")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# ---------------------------------------------------------------- least-privilege roles for catalogs
# A catalog refuses a superuser or a user with write privileges (allow_privileged_role: true lets one
# through, with a warning on every read). Tests create their tables as the servers' admin users and
# point their catalogs at a SELECT-only role, as users do: ``reader_url(pg_database)``,
# ``mysql_reader_url(mysql_database)``. The roles are created once per server (idempotently, so
# parallel test sessions can share them) and have no password (local trust / no-password test servers).

READER = "snapshot_reader"
_readers_made: set[str] = set()


def _ensure_pg_reader() -> None:
    import psycopg

    if "pg" in _readers_made:
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN"
            f" CREATE ROLE {READER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE pg_read_all_data;"
            " EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    _readers_made.add("pg")


def _ensure_mysql_reader() -> None:
    import pymysql

    if "mysql" in _readers_made:
        return
    with pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password="", autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(f"CREATE USER IF NOT EXISTS '{READER}'@'%'")
        cur.execute(f"GRANT SELECT ON *.* TO '{READER}'@'%'")
    _readers_made.add("mysql")


def reader_url(url: str, password: str | None = None) -> str:
    """``url`` (a test database's admin URL) for the SELECT-only role ``snapshot_reader``
    (PostgreSQL: a member of pg_read_all_data). ``password`` is put in (trust auth ignores it)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme.startswith("mysql"):
        _ensure_mysql_reader()
    else:
        _ensure_pg_reader()
    auth = READER if password is None else f"{READER}:{password}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.hostname}:{parts.port}"))


mysql_reader_url = reader_url


# The level of a test follows its folder: unit/ (no server), engines/ (one engine against its server
# or emulator), integration/ (Dagster, the CLI, MLflow, object storage, end to end). `-m unit` etc.
LEVEL_MARKERS = {"unit": "unit", "engines": "engine", "integration": "integration"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = item.path.resolve().relative_to(here).parts[0]
        except ValueError:
            continue
        if folder in LEVEL_MARKERS:
            item.add_marker(LEVEL_MARKERS[folder])
