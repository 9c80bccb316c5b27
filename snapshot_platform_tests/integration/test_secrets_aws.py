"""Secret references: ``{aws_secret: NAME, key: FIELD}`` against moto's Secrets Manager server.

Fetched with VersionStage=AWSCURRENT, kept in memory only, fetched again after a failed login: a
rotation between two reads (MariaDB password changed, secret updated) is picked up by the next read.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pymysql
import pytest

from snapshot_platform import secrets
from snapshot_platform.catalog import parse_catalog
from snapshot_platform.secrets import AwsSecretRef, SecretMissingError, resolve
from snapshot_platform_tests.capture_runs import take_snapshot
from snapshot_platform.orchestration.resources import source_resources
from snapshot_platform.sources import SourceError
from snapshot_platform.store import SnapshotStore
from snapshot_platform_tests.cli_runs import files_containing

DAY = "2024-03-10"


def new_secret(aws_env: Any, value: Any) -> str:
    name = f"sp/test-{uuid.uuid4().hex[:8]}"
    aws_env.client("secretsmanager").create_secret(
        Name=name, SecretString=value if isinstance(value, str) else json.dumps(value)
    )
    return name


def test_resolves_a_key_of_a_json_secret_and_a_whole_string(aws_env: Any) -> None:
    json_name = new_secret(aws_env, {"username": "reader", "password": "p@ss:w/rd"})
    plain_name = new_secret(aws_env, "mysql://reader:pw@db:3306/prod")
    assert resolve(AwsSecretRef(aws_secret=json_name, key="password")) == "p@ss:w/rd"
    assert resolve(AwsSecretRef(aws_secret=json_name, key="username")) == "reader"
    assert resolve(AwsSecretRef(aws_secret=plain_name)) == "mysql://reader:pw@db:3306/prod"


def test_errors_name_the_secret_never_a_value(aws_env: Any) -> None:
    name = new_secret(aws_env, {"password": "hunter2-value"})
    with pytest.raises(SecretMissingError, match="has no key 'passwd'") as info:
        resolve(AwsSecretRef(aws_secret=name, key="passwd"))
    assert "hunter2-value" not in str(info.value)
    with pytest.raises(SecretMissingError, match="ResourceNotFoundException"):
        resolve(AwsSecretRef(aws_secret="sp/does-not-exist", key="password"))
    plain = new_secret(aws_env, "not json hunter3")
    with pytest.raises(SecretMissingError, match="not a JSON object") as info:
        resolve(AwsSecretRef(aws_secret=plain, key="password"))
    assert "hunter3" not in str(info.value)


def test_kept_in_memory_fetched_again_only_on_refresh_and_always_awscurrent(aws_env: Any) -> None:
    sm = aws_env.client("secretsmanager")
    name = new_secret(aws_env, {"password": "first"})
    ref = AwsSecretRef(aws_secret=name, key="password")
    before = secrets.fetches
    assert resolve(ref) == "first"
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "second"}))
    assert resolve(ref) == "first"  # from memory: no call
    assert secrets.fetches == before + 1
    assert resolve(ref, refresh=True) == "second"  # the new AWSCURRENT, not AWSPREVIOUS
    assert secrets.fetches == before + 2
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert sorted(s for v in versions for s in v["VersionStages"]) == ["AWSCURRENT", "AWSPREVIOUS"]


@pytest.fixture
def maria_user(mysql_database: str, mysql_server: dict[str, Any]) -> Any:
    db = mysql_database.rsplit("/", 1)[1]
    user = f"sp_rot_{uuid.uuid4().hex[:8]}"
    with pymysql.connect(**mysql_server, database=db) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, d DATE)")
        cur.execute("INSERT INTO t VALUES (1, '2024-03-10')")
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", ("first-password",))
        cur.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")

    def set_password(password: str) -> None:
        with pymysql.connect(**mysql_server) as conn:
            conn.cursor().execute(f"ALTER USER '{user}'@'%%' IDENTIFIED BY %s", (password,))

    yield {"user": user, "db": db, "set_password": set_password}
    with pymysql.connect(**mysql_server) as conn:
        conn.cursor().execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_a_rotation_between_two_reads_is_picked_up_after_the_failed_login(
    aws_env: Any, maria_user: Any, tmp_path: Path
) -> None:
    sm = aws_env.client("secretsmanager")
    name = new_secret(aws_env, {"username": maria_user["user"], "password": "first-password"})
    catalog = parse_catalog({
        "sources": {"shop": {"kind": "mysql", "url": f"mysql://{maria_user['user']}@127.0.0.1:3306/{maria_user['db']}",
                             "password": {"aws_secret": name, "key": "password"}}},
        "snapshots": {"snap": {"source": "shop", "key": ["id"],
                               "query": "SELECT id FROM t WHERE d >= :partition_start AND d < :partition_end",
                               "partitions": {"cadence": "daily", "start": "2024-01-01"}}},
    })
    store = SnapshotStore(tmp_path / "storage")
    fetches = secrets.fetches
    assert take_snapshot(catalog, "snap", DAY, store).result.manifest.row_count == 1
    assert secrets.fetches == fetches + 1

    # the rotation: the database password changes, the secret's AWSCURRENT version follows
    maria_user["set_password"]("second-password")
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"username": maria_user["user"],
                                                                 "password": "second-password"}))
    outcome = take_snapshot(catalog, "snap", DAY, store, sleep=lambda s: pytest.fail("no retry needed"))
    assert outcome.attempts == 1 and outcome.result.manifest.row_count == 1
    assert secrets.fetches == fetches + 2  # the cached one failed, fetched once more
    take_snapshot(catalog, "snap", DAY, store)
    assert secrets.fetches == fetches + 2  # and kept in memory again

    # a password nobody knows: one more fetch, then a clear failure without the secret
    maria_user["set_password"]("third-password-unknown")
    with pytest.raises(SourceError, match="authentication failed") as info:
        take_snapshot(catalog, "snap", DAY, store)
    assert secrets.fetches == fetches + 3
    assert "second-password" not in str(info.value)

    # never on disk, never in the Dagster resource's settings
    for pw in ("first-password", "second-password"):
        assert files_containing(tmp_path, pw) == []
    (resource,) = source_resources(catalog).values()
    assert json.loads(resource.settings_json)["password"] == {"aws_secret": name, "key": "password"}
    assert "first-password" not in resource.settings_json and "second-password" not in resource.settings_json
