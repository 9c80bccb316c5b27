"""Production safety, engine by engine, against real servers.

- a SELECT-only role (PostgreSQL and MariaDB): writes through the tool fail, also when the query tries
  to switch the read-only mode off; the role itself cannot write after ``SET default_transaction_read_only
  = off`` / ``SET SESSION TRANSACTION READ WRITE`` (the role is the boundary, the read-only session a
  guard-rail);
- a slow query is cancelled by the statement timeout, fast, and not retried;
- an unreachable host fails fast for every engine, and is not retried into a storm;
- a wrong password fails fast with a clear message and no secret (MariaDB: PostgreSQL here trusts every
  local connection, so a wrong password cannot fail there);
- the replica-lag guard lets a primary through;
- a sentinel password on refused connections and a wrong-password login, through ``dagster asset
  materialize``: it appears in no output and in no file under DAGSTER_HOME or the storage.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pymysql
import pytest

from snapshot_platform.catalog import Catalog, parse_catalog
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import BIN, dagster_materialize, files_containing, step_failures
from snapshot_platform_tests.conftest import reader_url

DAY = "2024-03-10"
WINDOW = "WHERE d >= :partition_start AND d < :partition_end"


def catalog_for(kind: str, query: str, key: list[str] | None = None, **source: Any) -> Catalog:
    return parse_catalog({
        "sources": {"src": {"kind": kind, **source}},
        "snapshots": {"snap": {"source": "src", "query": query, "key": key or ["id"],
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })


def no_retry(seconds: float) -> None:
    pytest.fail(f"a non-transient failure was retried (sleep {seconds}s)")


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "storage")


# ---------------------------------------------------------------- SELECT-only roles


@pytest.fixture
def pg_reader(pg_database: str) -> Iterator[str]:
    """A table, a write-hiding function, and a role that may only SELECT; yields the role's URL."""
    role = f"sp_reader_{uuid.uuid4().hex[:8]}"
    db = pg_database.rsplit("/", 1)[1]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date)")
        conn.execute("INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10')")
        conn.execute("CREATE FUNCTION purge() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM t RETURNING 1'")
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO "{role}"')
        conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    try:
        yield pg_database.replace("postgres@", f"{role}@")
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        with psycopg.connect(pg_database.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


PG_WRITE_ATTEMPTS = [
    # a data-modifying CTE: the way a query can try to write
    f"WITH d AS (DELETE FROM t RETURNING *) SELECT id FROM d {WINDOW}",
    # a write hidden in a function
    f"SELECT id, purge() AS p FROM t {WINDOW}",
    # switching the guard-rail off inside the query, then writing
    f"SELECT id, set_config('default_transaction_read_only', 'off', false) AS off, purge() AS p FROM t {WINDOW}",
    f"SELECT id, set_config('transaction_read_only', 'off', true) AS off FROM t {WINDOW}",
]


@pytest.mark.parametrize("query", PG_WRITE_ATTEMPTS)
def test_postgres_writes_through_the_tool_fail(pg_reader: str, pg_database: str, store: SnapshotStore,
                                               query: str) -> None:
    catalog = catalog_for("postgres", query, url=pg_reader)
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert not info.value.transient
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    assert store.assets() == []


def test_postgres_select_only_role_cannot_write_even_after_switching_read_only_off(pg_reader: str) -> None:
    """The role is the security boundary: a session may switch default_transaction_read_only off."""
    with psycopg.connect(pg_reader, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM t")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT purge()")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_postgres_reader_can_snapshot(pg_reader: str, store: SnapshotStore) -> None:
    catalog = catalog_for("postgres", f"SELECT id FROM t {WINDOW}", url=pg_reader, max_replica_lag_s=0.5)
    outcome = take_snapshot(catalog, "snap", DAY, store)
    assert outcome.result.manifest.row_count == 2
    # on a primary (not in recovery) the replica-lag guard lets the read through and records no lag
    assert outcome.result.manifest.source_state["in_recovery"] is False
    assert "replica_lag_s" not in outcome.result.manifest.source_state


@pytest.fixture
def maria_reader(mysql_database: str, mysql_server: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A table, a write-hiding function, and a user that may only SELECT (password-authenticated)."""
    db = mysql_database.rsplit("/", 1)[1]
    user, password = f"sp_reader_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with pymysql.connect(**mysql_server, database=db) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, d DATE)")
        cur.execute("INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10')")
        cur.execute("CREATE FUNCTION wipe() RETURNS INT MODIFIES SQL DATA SQL SECURITY INVOKER "
                    "BEGIN DELETE FROM t; RETURN 1; END")
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT SELECT, EXECUTE ON `{db}`.* TO '{user}'@'%'")
    try:
        yield {"user": user, "password": password, "db": db,
               "url": f"mysql://{user}:{password}@127.0.0.1:3306/{db}"}
    finally:
        with pymysql.connect(**mysql_server) as conn:
            conn.cursor().execute(f"DROP USER IF EXISTS '{user}'@'%'")


def maria_count(mysql_server: dict[str, Any], db: str) -> int:
    with pymysql.connect(**mysql_server, database=db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM t")
        return cur.fetchone()[0]


@pytest.mark.parametrize("query", [
    f"SELECT id, wipe() AS p FROM t {WINDOW}",
    f"SELECT id FROM t {WINDOW} AND wipe() = 1",
])
@pytest.mark.parametrize("as_root", [False, True], ids=["select_only_user", "root"])
def test_mariadb_writes_through_the_tool_fail(maria_reader: dict[str, str], mysql_server: dict[str, Any],
                                              store: SnapshotStore, monkeypatch: pytest.MonkeyPatch,
                                              query: str, as_root: bool) -> None:
    """Even as root (let through by allow_privileged_role) the read-only transaction refuses the write
    (error 1792); as the reader, the missing privilege does too."""
    url = f"mysql://root@127.0.0.1:3306/{maria_reader['db']}" if as_root else maria_reader["url"]
    monkeypatch.setenv("SP_TEST_MARIA_URL", url)
    catalog = catalog_for("mysql", query, url={"env": "SP_TEST_MARIA_URL"}, allow_privileged_role=as_root)
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    if as_root:
        assert info.value.code == "1792" and "read-only" in str(info.value)
    assert maria_count(mysql_server, maria_reader["db"]) == 2
    assert maria_reader["password"] not in str(info.value)


def test_mariadb_select_only_user_cannot_write_even_in_a_read_write_session(maria_reader: dict[str, str]) -> None:
    with pymysql.connect(host="127.0.0.1", user=maria_reader["user"], password=maria_reader["password"],
                         database=maria_reader["db"], autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SET SESSION TRANSACTION READ WRITE")
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("DELETE FROM t")
        assert info.value.args[0] == 1142  # DELETE command denied


# ---------------------------------------------------------------- statement timeouts


def test_postgres_slow_query_is_cancelled_fast(pg_reader: str, store: SnapshotStore) -> None:
    catalog = catalog_for("postgres", f"SELECT id, pg_sleep(30)::text AS s FROM t {WINDOW}", url=pg_reader,
                          statement_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="statement timeout") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert time.monotonic() - started < 15  # cancelled after 1 s, not after the 30 s sleep
    assert info.value.code == "57014"


def test_mariadb_slow_query_is_cancelled_fast(maria_reader: dict[str, str], store: SnapshotStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_TEST_MARIA_URL", maria_reader["url"])
    catalog = catalog_for("mysql", f"SELECT id, SLEEP(30) AS s FROM t {WINDOW}", url={"env": "SP_TEST_MARIA_URL"},
                          statement_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="statement timeout") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert time.monotonic() - started < 15  # cancelled after 1 s, not after the 30 s sleep
    assert info.value.code == "1969" and not info.value.transient


def test_redshift_path_slow_query_is_cancelled_fast(pg_reader: str, store: SnapshotStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_TEST_RS_URL", pg_reader)
    catalog = catalog_for("redshift", f"SELECT id, pg_sleep(30)::text AS s FROM t {WINDOW}",
                          url={"env": "SP_TEST_RS_URL"}, sslmode="disable", statement_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="statement timeout") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert time.monotonic() - started < 15  # cancelled after 1 s, not after the 30 s sleep
    assert info.value.code == "57014"


# ---------------------------------------------------------------- unreachable hosts, wrong passwords

SENTINEL_QUERY = f"SELECT 1 AS id FROM t {WINDOW}"


def unreachable_sources(secret: str) -> dict[str, dict[str, Any]]:
    """One source per engine whose connection is refused (port 1 on localhost), each holding ``secret``."""
    return {
        "pg_refused": {"kind": "postgres", "url": {"env": "SP_SENTINEL_PG_URL"}},
        "mysql_refused": {"kind": "mysql", "url": {"env": "SP_SENTINEL_MYSQL_URL"}},
        "redshift_refused": {"kind": "redshift", "url": {"env": "SP_SENTINEL_RS_URL"}, "sslmode": "disable"},
        "snowflake_refused": {"kind": "snowflake", "account": "acme", "user": "reader",
                              "password": {"env": "SP_SENTINEL_PASSWORD"},
                              "host": "127.0.0.1", "port": 1, "protocol": "http"},
        "bigquery_refused": {"kind": "bigquery", "project": "sp-test", "api_endpoint": "http://127.0.0.1:1",
                             "credentials_json": {"env": "SP_SENTINEL_BQ_KEY"}, "storage_api": False},
    }


def sentinel_env(secret: str) -> dict[str, str]:
    return {
        "SP_SENTINEL_PG_URL": f"postgresql://reader:{secret}@127.0.0.1:1/prod",
        "SP_SENTINEL_MYSQL_URL": f"mysql://reader:{secret}@127.0.0.1:1/prod",
        "SP_SENTINEL_RS_URL": f"postgresql://reader:{secret}@127.0.0.1:1/prod",
        "SP_SENTINEL_PASSWORD": secret,
        "SP_SENTINEL_BQ_KEY": service_account_key(secret),
    }


def service_account_key(secret: str) -> str:
    """A well-formed service account key whose id is ``secret``; its token endpoint refuses connections."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps({
        "type": "service_account", "project_id": "sp-test", "private_key_id": secret, "private_key": pem,
        "client_email": f"reader@sp-test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
    })


@pytest.mark.parametrize("name", list(unreachable_sources("x")))
def test_an_unreachable_host_fails_fast_for_every_engine(name: str, store: SnapshotStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"S3ntinel-{uuid.uuid4()}"
    for k, v in sentinel_env(secret).items():
        monkeypatch.setenv(k, v)
    spec = dict(unreachable_sources(secret)[name], connect_timeout_s=2)
    catalog = catalog_for(spec.pop("kind"), SENTINEL_QUERY, **spec)
    sleeps: list[float] = []
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=sleeps.append)
    elapsed = time.monotonic() - started
    assert elapsed < 12, f"{name} took {elapsed:.1f}s to fail"
    assert sleeps == [], "an unreachable host is not a transient error worth a retry storm"
    text = str(info.value) + repr(info.value.args) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert secret not in text
    assert store.assets() == []


def test_mariadb_wrong_password_fails_fast_and_clearly(maria_reader: dict[str, str], store: SnapshotStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"S3ntinel-{uuid.uuid4()}"
    monkeypatch.setenv("SP_TEST_MARIA_URL",
                       f"mysql://{maria_reader['user']}:{secret}@127.0.0.1:3306/{maria_reader['db']}")
    catalog = catalog_for("mysql", f"SELECT id FROM t {WINDOW}", url={"env": "SP_TEST_MARIA_URL"})
    started = time.monotonic()
    with pytest.raises(SourceError, match="authentication failed") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert time.monotonic() - started < 5
    assert info.value.code == "1045"
    assert secret not in str(info.value) and maria_reader["password"] not in str(info.value)


# ---------------------------------------------------------------- no secret anywhere, through Dagster


@pytest.mark.slow
def test_sentinel_secret_reaches_no_output_and_no_file(
    maria_reader: dict[str, str], aws_env: Any, platform_env: Any, write_catalog: Any
) -> None:
    secret = f"S3ntinel-{uuid.uuid4()}"
    sm = aws_env.client("secretsmanager")
    secret_name = f"sp/sentinel-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=secret_name, SecretString=json.dumps({"password": secret}))
    sources = {name: dict(spec, connect_timeout_s=2, max_attempts=2)
               for name, spec in unreachable_sources(secret).items()}
    # a real server refusing the sentinel as a wrong password, the URL carrying the user only
    sources["mysql_wrong_password"] = {
        "kind": "mysql", "url": f"mysql://{maria_reader['user']}@127.0.0.1:3306/{maria_reader['db']}",
        "password": {"aws_secret": secret_name, "key": "password"}, "connect_timeout_s": 2,
    }
    snapshots = {f"from_{name}": {"source": name, "query": SENTINEL_QUERY, "key": ["id"],
                                  "partitions": {"cadence": "daily", "start": "2024-01-01"}}
                 for name in sources}
    catalog = write_catalog({"sources": sources, "snapshots": snapshots})
    started = time.monotonic()
    proc = dagster_materialize(catalog, platform_env, list(snapshots), DAY,
                               **sentinel_env(secret), **aws_env.environ())
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert secret not in output
    assert files_containing(platform_env.dagster_home, secret) == []
    assert files_containing(platform_env.storage, secret) == []
    assert files_containing(platform_env.home, secret) == []
    # each failure says what went wrong, in the event log the UI shows (and in no secret)
    failures = step_failures(platform_env.dagster_home)
    assert set(failures) == {f"snapshots__from_{name}" for name in sources}, failures
    assert all(secret not in text for text in failures.values())
    assert "authentication failed" in failures["snapshots__from_mysql_wrong_password"], failures
    for name in unreachable_sources(secret):
        assert f"source {name} (" in failures[f"snapshots__from_{name}"], (name, failures)
    assert "Materialization failed" in output
    assert elapsed < 180, f"{elapsed:.0f}s"


# ---------------------------------------------------------------- max_concurrent_queries


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1, 2])
def test_max_concurrent_queries_is_enforced_across_runs(pg_database: str, platform_env: Any, write_catalog: Any,
                                                        limit: int) -> None:
    """Two runs at once against a source with max_concurrent_queries: 1 never query it at the same time;
    with 2 they do (so the test can tell).

    The Dagster instance keeps its storage in PostgreSQL, as deploy/dagster.postgres.yaml recommends for
    shared deployments: slot claims there are row-locked transactions.
    """
    instance_db = f"sp_dagster_{uuid.uuid4().hex[:8]}"
    admin = pg_database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{instance_db}"')
    (platform_env.dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        # psycopg2 named explicitly: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, with which
        # dagster-postgres 0.29's NOTIFY fails
        f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://postgres@127.0.0.1:5432/{instance_db}\n"
    )
    try:
        _two_runs(pg_database, platform_env, write_catalog, limit)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{instance_db}" WITH (FORCE)')


GATE_LOCK = 4242  # an advisory lock the test holds: each snapshot query waits on it, holding its slot


def _two_runs(pg_database: str, platform_env: Any, write_catalog: Any, limit: int) -> None:
    """Two runs of one source, their queries held open by the test until it has seen what the pool did.

    Every query waits on an advisory lock the test holds (a read-only transaction may take one), so the
    first query keeps its slot for as long as the test needs, however slowly the machine starts the
    second run: with two slots both queries are seen waiting at once; with one, the second run's step
    is seen pending on the pool (in the instance's concurrency table) while only one query runs.
    """
    from dagster import DagsterInstance

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date)")
        conn.execute("INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-11')")
    catalog = write_catalog({
        "sources": {"replica": {"kind": "postgres", "url": reader_url(pg_database), "max_concurrent_queries": limit}},
        "snapshots": {"slow": {
            "source": "replica", "key": ["id"], "partitions": {"cadence": "daily", "start": "2024-01-01"},
            "query": f"SELECT id, clock_timestamp() AS began, pg_advisory_xact_lock_shared({GATE_LOCK})::text AS gate,"
                     f" clock_timestamp() AS ended FROM t {WINDOW}",
        }},
    })
    env = platform_env.environ(SNAPSHOT_PLATFORM_CATALOG=str(catalog))
    applied = subprocess.run([str(BIN / "snapshot-platform"), "pools", "--apply", "--json"], env=env, capture_output=True, text=True, check=True)
    assert json.loads(applied.stdout)["pools"] == {"source_replica": limit}

    def launch(day: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
                                 "--select", "snapshots/slow", "--partition", day], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs: list[subprocess.Popen[str]] = []

    def wait_until(what: str, condition: Any) -> None:
        deadline = time.monotonic() + 180
        while not condition():
            for p in procs:
                assert p.poll() is None, f"a run ended while {what}: " + p.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.1)

    with psycopg.connect(pg_database, autocommit=True) as gate, \
            DagsterInstance.from_config(str(platform_env.dagster_home)) as instance:

        def running_queries(waiting_on_gate: bool = False) -> int:
            # a query is listed as soon as it is sent, before its row has evaluated clock_timestamp(): only
            # one that waits on the gate's advisory lock has certainly begun
            return gate.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'snapshot_platform'"
                " AND query LIKE '%pg_advisory_xact_lock_shared%' AND pid <> pg_backend_pid()"
                " AND datname = current_database()"  # not another test session's database
                + (" AND wait_event_type = 'Lock' AND wait_event = 'advisory'" if waiting_on_gate else "")
            ).fetchone()[0]

        def pending_steps() -> int:
            return instance.event_log_storage.get_concurrency_info("source_replica").pending_step_count

        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        try:
            procs.append(launch("2024-03-10"))
            wait_until("the first run's query started", lambda: running_queries(waiting_on_gate=True) == 1)
            # the second run starts while the first query holds its slot. (Two claims in the same few
            # milliseconds can both win in Dagster 1.13: its slot claim is not one transaction.)
            procs.append(launch("2024-03-11"))
            if limit == 2:
                wait_until("both runs' queries wait on the gate at once", lambda: running_queries(waiting_on_gate=True) == 2)
            else:
                wait_until("the second run's step waits for the pool (or queries)",
                           lambda: pending_steps() == 1 or running_queries() == 2)
                assert running_queries() == 1, "the pool let a second query through"
                assert pending_steps() == 1
        except BaseException:
            for p in procs:
                p.kill()
            raise
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    store = SnapshotStore(platform_env.storage)
    (first,), (second,) = (store.read_table("slow", day).to_pylist() for day in ("2024-03-10", "2024-03-11"))
    if limit == 2:
        assert second["began"] < first["ended"], "with two slots the queries should have overlapped"
        return
    assert second["began"] >= first["ended"], (
        "the two queries overlapped: the pool did not hold the second back\n" + "\n".join(e for _, e in outputs))


# ---------------------------------------------------------------- sources as Dagster resources


def test_every_engine_is_a_configurable_resource_holding_references_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import AssetKey, Definitions

    from snapshot_platform.definitions import build_definitions
    from snapshot_platform.orchestration.resources import RESOURCE_CLASSES, SourceResource

    secret = f"S3ntinel-{uuid.uuid4()}"
    for k, v in sentinel_env(secret).items():
        monkeypatch.setenv(k, v)
    sources = unreachable_sources(secret)
    sources["sqlite_demo"] = {"kind": "sqlite", "path": "demo.sqlite"}
    catalog = parse_catalog({
        "sources": sources,
        "snapshots": {f"from_{n}": {"source": n, "query": SENTINEL_QUERY, "key": ["id"],
                                    "partitions": {"cadence": "daily", "start": "2024-01-01"}} for n in sources},
    })
    defs = build_definitions(catalog)
    assert isinstance(defs, Definitions)
    defs.resolve_implicit_global_asset_job_def()  # the resources resolve into a job
    for name, spec in catalog.sources.items():
        ad = defs.resolve_assets_def(AssetKey(["snapshots", f"from_{name}"]))
        resource_def = ad.resource_defs[f"source_{name}"]
        assert resource_def.configurable_resource_cls is RESOURCE_CLASSES[spec.kind]
        assert issubclass(resource_def.configurable_resource_cls, SourceResource)
        config = resource_def.config_schema.default_value  # what the UI shows
        assert config["kind"] == spec.kind and config["source_name"] == name
        assert secret not in json.dumps(config)
        resource = RESOURCE_CLASSES[spec.kind](**config)
        assert resource.get_source().describe()["kind"] == spec.kind
        assert ad.node_def.pool == f"source_{name}"


# ---------------------------------------------------------------- privileged roles are refused

DBLINK_UPDATE = ("SELECT id, dblink_exec('host=127.0.0.1 dbname=' || current_database() || ' user=postgres',"
                 " 'UPDATE t SET d = d + 1') AS wrote FROM t " + WINDOW)


@pytest.fixture
def pg_admin_db(pg_database: str) -> str:
    """``t`` with two rows and the dblink extension (a second connection outside the read-only session)."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date)")
        conn.execute("INSERT INTO t VALUES (1, '2024-03-10'), (2, '2024-03-10')")
        conn.execute("CREATE EXTENSION dblink")
    return pg_database


def pg_days(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        return [r[0].isoformat() for r in conn.execute("SELECT d FROM t ORDER BY id")]


def test_postgres_superuser_is_refused_before_any_query_runs(pg_admin_db: str, store: SnapshotStore) -> None:
    """As a superuser, dblink_exec commits an UPDATE through a second connection and
    pg_terminate_backend kills another session, whatever the read-only session says: refused."""
    with psycopg.connect(pg_admin_db, autocommit=True) as bystander:
        pid = bystander.execute("SELECT pg_backend_pid()").fetchone()[0]
        for query in (DBLINK_UPDATE, f"SELECT id, pg_terminate_backend({pid}) AS killed FROM t {WINDOW}"):
            with pytest.raises(SourceError) as info:
                take_snapshot(catalog_for("postgres", query, url=pg_admin_db), "snap", DAY, store, sleep=no_retry)
            assert info.value.code == "privileged_role" and "superuser" in str(info.value)
            assert "allow_privileged_role" in str(info.value) and not info.value.transient
        assert bystander.execute("SELECT 1").fetchone() == (1,)  # not terminated
    assert pg_days(pg_admin_db) == ["2024-03-10", "2024-03-10"]  # nothing written through dblink
    assert store.assets() == []


def test_postgres_member_of_pg_write_all_data_is_refused(pg_admin_db: str, store: SnapshotStore) -> None:
    role = f"sp_writer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_db, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pg_read_all_data, pg_write_all_data')
    try:
        url = pg_admin_db.replace("postgres@", f"{role}@")
        with pytest.raises(SourceError, match="member of pg_write_all_data") as info:
            take_snapshot(catalog_for("postgres", f"SELECT id FROM t {WINDOW}", url=url), "snap", DAY, store)
        assert info.value.code == "privileged_role"
    finally:
        with psycopg.connect(pg_admin_db, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_allow_privileged_role_reads_and_warns_on_every_read(pg_admin_db: str, store: SnapshotStore,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    catalog = catalog_for("postgres", f"SELECT id FROM t {WINDOW}", url=pg_admin_db, allow_privileged_role=True)
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="snapshot_platform.sources"):
            outcome = take_snapshot(catalog, "snap", DAY, store)
        assert any("privileged role (superuser)" in r.getMessage() for r in caplog.records), caplog.text
    assert outcome.result.manifest.source_state["privileged_role"] == "superuser"
    assert outcome.result.manifest.row_count == 2
    # the read-only session is still there: the dblink write is not, but a write in the session is refused
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog_for("postgres", f"WITH x AS (DELETE FROM t RETURNING *) SELECT id FROM x {WINDOW}",
                                  url=pg_admin_db, allow_privileged_role=True), "snap", DAY, store)
    assert pg_days(pg_admin_db) == ["2024-03-10", "2024-03-10"]


def test_redshift_path_superuser_is_refused(pg_admin_db: str, store: SnapshotStore) -> None:
    catalog = catalog_for("redshift", DBLINK_UPDATE, url=pg_admin_db, sslmode="disable")
    with pytest.raises(SourceError, match="superuser") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert info.value.code == "privileged_role"
    assert pg_days(pg_admin_db) == ["2024-03-10", "2024-03-10"]


@pytest.mark.parametrize("grant", ["root", "INSERT", "FILE"])
def test_mariadb_user_with_write_or_admin_privileges_is_refused(maria_reader: dict[str, str], mysql_server: dict[str, Any],
                                                                store: SnapshotStore, monkeypatch: pytest.MonkeyPatch,
                                                                grant: str) -> None:
    db = maria_reader["db"]
    if grant == "root":
        url = f"mysql://root@127.0.0.1:3306/{db}"
    else:
        with pymysql.connect(**mysql_server) as conn:
            on = "*.*" if grant == "FILE" else f"`{db}`.*"
            conn.cursor().execute(f"GRANT {grant} ON {on} TO '{maria_reader['user']}'@'%'")
        url = maria_reader["url"]
    monkeypatch.setenv("SP_TEST_MARIA_URL", url)
    catalog = catalog_for("mysql", f"SELECT id FROM t {WINDOW}", url={"env": "SP_TEST_MARIA_URL"})
    with pytest.raises(SourceError, match="privileged role") as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    assert info.value.code == "privileged_role"
    assert (grant if grant != "root" else "INSERT on *.*") in str(info.value)
    assert maria_reader["password"] not in str(info.value)
    allowed = catalog_for("mysql", f"SELECT id FROM t {WINDOW}", url={"env": "SP_TEST_MARIA_URL"},
                          allow_privileged_role=True)
    assert take_snapshot(allowed, "snap", DAY, store).result.manifest.source_state["privileged_role"]


# ---------------------------------------------------------------- ambiguous URLs quote nothing of them


@pytest.mark.parametrize("char", ["#", "/", "@", "?"])
@pytest.mark.parametrize("kind", ["postgres", "mysql", "redshift"])
def test_a_password_with_an_unencoded_character_leaks_no_part_of_it(kind: str, char: str, store: SnapshotStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    head, tail = f"Head{uuid.uuid4().hex[:10]}", f"Tail{uuid.uuid4().hex[:10]}"
    scheme = "mysql" if kind == "mysql" else "postgresql"
    monkeypatch.setenv("SP_TEST_URL", f"{scheme}://reader:{head}{char}{tail}@127.0.0.1:1/prod")
    extra = {"sslmode": "disable"} if kind == "redshift" else {}
    catalog = catalog_for(kind, f"SELECT id FROM t {WINDOW}", url={"env": "SP_TEST_URL"}, connect_timeout_s=2, **extra)
    with pytest.raises(SourceError) as info:
        take_snapshot(catalog, "snap", DAY, store, sleep=no_retry)
    text = str(info.value) + repr(info.value.args) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert head not in text and tail not in text, text
    assert "percent-encoded" in str(info.value) and "SP_TEST_URL" in str(info.value)


@pytest.mark.slow
def test_sentinel_secret_reaches_nothing_dagster_or_the_project_persist(
    pg_database: str, platform_env: Any, write_catalog: Any
) -> None:
    """A sentinel password (PostgreSQL's trust auth here ignores it, so every read runs) in the URLs of a
    read that succeeds and trains a model, and of reads failing on permission, syntax, timeout and an
    unencoded '#': it is in no output and no file the project or Dagster writes (instance databases with
    their run and job snapshots and event log, compute logs, manifests, Parquet, the MLflow store)."""
    secret = f"S3ntinel{uuid.uuid4().hex}"
    role = f"sp_noperm_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date, x float8, y int)")
        conn.execute("INSERT INTO t SELECT g, date '2024-03-10', g, g % 2 FROM generate_series(1, 60) g")
        conn.execute(f'CREATE ROLE "{role}" LOGIN')  # may connect, may not read t
    try:
        reader = reader_url(pg_database, password=secret)
        noperm = pg_database.replace("postgres@", f"{role}:{secret}@")
        env = {"SP_LEAK_OK": reader, "SP_LEAK_NOPERM": noperm,
               "SP_LEAK_PARAM": reader_url(pg_database) + f"?password={secret}",
               "SP_LEAK_HASH": reader_url(pg_database, password=f"{secret[:20]}#{secret[20:]}")}
        sources = {
            "ok": {"kind": "postgres", "url": {"env": "SP_LEAK_OK"}},
            "param": {"kind": "postgres", "url": {"env": "SP_LEAK_PARAM"}, "statement_timeout_s": 1},
            "noperm": {"kind": "postgres", "url": {"env": "SP_LEAK_NOPERM"}},
            "hash": {"kind": "postgres", "url": {"env": "SP_LEAK_HASH"}},
        }
        part = {"cadence": "daily", "start": "2024-01-01"}
        snapshots = {
            "good": {"source": "ok", "query": f"SELECT id, x, y FROM t {WINDOW}", "key": ["id"], "partitions": part},
            "syntax": {"source": "ok", "query": f"SELECT id,, x FROM t {WINDOW}", "key": ["id"], "partitions": part},
            "timeout": {"source": "param", "query": f"SELECT id, pg_sleep(30)::text AS s FROM t {WINDOW}",
                        "key": ["id"], "partitions": part},
            "permission": {"source": "noperm", "query": f"SELECT id FROM t {WINDOW}", "key": ["id"],
                           "partitions": part},
            "unencoded": {"source": "hash", "query": f"SELECT id FROM t {WINDOW}", "key": ["id"], "partitions": part},
        }
        models = {"leak": {"snapshot": "good", "features": ["x"], "target": "y",
                           "estimator": {"class": "sklearn.dummy.DummyClassifier"}}}
        catalog = write_catalog({"sources": sources, "snapshots": snapshots, "models": models})
        proc = dagster_materialize(catalog, platform_env, list(snapshots), DAY, **env)
        trained = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "snapshot_platform.definitions",
             "--select", "models/leak", "--partition", DAY],
            env=platform_env.environ(SNAPSHOT_PLATFORM_CATALOG=str(catalog), **env),
            capture_output=True, text=True, timeout=300,
        )
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    assert trained.returncode == 0, trained.stderr[-3000:]
    failures = step_failures(platform_env.dagster_home)
    assert set(failures) == {f"snapshots__{n}" for n in ("syntax", "timeout", "permission", "unencoded")}, failures
    assert "syntax error" in failures["snapshots__syntax"]
    assert "statement timeout" in failures["snapshots__timeout"]
    assert "permission denied" in failures["snapshots__permission"]
    assert "percent-encoded" in failures["snapshots__unencoded"]
    pieces = [secret, secret[:20], secret[20:]]  # the '#' URL's halves
    for text in (proc.stdout + proc.stderr, trained.stdout + trained.stderr, *failures.values()):
        assert not [p for p in pieces if p in text]
    assert list(platform_env.storage.rglob("*.parquet")) and list(platform_env.storage.rglob("manifest.json"))
    mlflow_files = [p for p in platform_env.home.rglob("*") if p.is_file()]
    assert mlflow_files, "the model run should have written the MLflow store under the platform home"
    for root in (platform_env.dagster_home, platform_env.storage, platform_env.home):
        for p in pieces:
            assert files_containing(root, p) == [], (root, p)


def test_the_read_only_session_alone_stops_neither_dblink_nor_pg_terminate_backend(pg_admin_db: str,
                                                                                    store: SnapshotStore) -> None:
    """Why a privileged role is refused: let through (allow_privileged_role), a superuser's query commits
    an UPDATE through dblink and kills another session, although the read ran READ ONLY."""
    catalog = catalog_for("postgres", DBLINK_UPDATE, url=pg_admin_db, allow_privileged_role=True)
    take_snapshot(catalog, "snap", DAY, store)
    assert pg_days(pg_admin_db) != ["2024-03-10", "2024-03-10"]  # written (once per row), committed
    with psycopg.connect(pg_admin_db, autocommit=True) as bystander:
        pid = bystander.execute("SELECT pg_backend_pid()").fetchone()[0]
        catalog = catalog_for("postgres", f"SELECT id, pg_terminate_backend({pid}) AS killed FROM t "
                              "WHERE d >= :partition_start - interval '9 days' AND d < :partition_end + interval '9 days'",
                              url=pg_admin_db, allow_privileged_role=True)
        take_snapshot(catalog, "snap", DAY, store)
        with pytest.raises(psycopg.OperationalError):
            bystander.execute("SELECT 1")
