"""Catalog validation: every error names the file, the entry and the field; nothing connects.

Catalogs are written to YAML files in ``tmp_path`` and loaded with ``load_catalog(path)``, the way
users and ``snapshot_platform.definitions`` load them.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from snapshot_platform.catalog import (
    DEMO_CATALOG,
    CatalogError,
    load_catalog,
)
from snapshot_platform.secrets import EnvRef
from snapshot_platform.sources.postgres import PostgresSourceSpec
from snapshot_platform.sources.sqlite import SqliteSourceSpec

WINDOW_QUERY = (
    "SELECT customer_id, signup_date, churn_label\n"
    "FROM customer_data\n"
    "WHERE signup_date >= :partition_start AND signup_date < :partition_end\n"
)

BASE: dict[str, Any] = {
    "sources": {
        "warehouse": {
            "kind": "postgres",
            "url": {"env": "WAREHOUSE_URL", "default": "postgresql://reader@127.0.0.1:1/prod"},
            "statement_timeout_s": 600,
            "max_concurrent_queries": 2,
        },
        "local_db": {"kind": "sqlite", "path": "demo/production.sqlite"},
    },
    "snapshots": {
        "customer_data": {
            "source": "warehouse",
            "description": "Customers who signed up in the partition's window",
            "query": WINDOW_QUERY,
            "partitions": {"cadence": "daily", "start": "2024-01-01"},
            "key": ["customer_id"],
            "not_null": ["customer_id", "signup_date"],
            "tags": {"domain": "growth"},
        },
    },
}


def write_catalog(tmp_path: Path, data: Any, name: str = "snapshots.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def mutated(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    mutate(data)
    return data


def catalog_error(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value)


def assert_names(msg: str, path: Path, entry: str, field: str) -> None:
    assert str(path) in msg, f"the file is not named in: {msg}"
    assert entry in msg, f"the entry {entry!r} is not named in: {msg}"
    assert f"field '{field}'" in msg, f"the field {field!r} is not named in: {msg}"


# ------------------------------------------------------------------ valid catalogs


def test_valid_catalog_loads_into_typed_specs(tmp_path):
    path = write_catalog(tmp_path, BASE)
    catalog = load_catalog(path)
    assert catalog.path == str(path)
    assert set(catalog.sources) == {"warehouse", "local_db"}
    wh = catalog.sources["warehouse"]
    assert isinstance(wh, PostgresSourceSpec) and isinstance(wh.url, EnvRef)
    assert wh.url.env == "WAREHOUSE_URL"
    assert isinstance(catalog.sources["local_db"], SqliteSourceSpec)
    spec = catalog.snapshots["customer_data"]
    assert spec.partitions.cadence == "daily"
    assert spec.partitions.start.year == 2024 and spec.partitions.start.day == 1
    assert spec.key == ["customer_id"]
    assert spec.tags == {"domain": "growth"}
    assert catalog.source_of("customer_data") == ("warehouse", wh)


def test_env_variable_selects_the_catalog(tmp_path, monkeypatch):
    path = write_catalog(tmp_path, BASE, "chosen.yaml")
    monkeypatch.setenv("SNAPSHOT_PLATFORM_CATALOG", str(path))
    assert load_catalog().path == str(path)


def test_demo_catalog_is_valid(monkeypatch):
    monkeypatch.delenv("SNAPSHOT_PLATFORM_CATALOG", raising=False)
    catalog = load_catalog()
    assert Path(catalog.path) == DEMO_CATALOG
    assert "customer_data" in catalog.snapshots


def test_every_cadence_is_accepted(tmp_path):
    for cadence in ("hourly", "daily", "weekly", "monthly"):
        data = mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(cadence=cadence))
        path = write_catalog(tmp_path, data, f"{cadence}.yaml")
        assert load_catalog(path).snapshots["customer_data"].partitions.cadence == cadence


def test_postgres_url_without_password_is_accepted_literally(tmp_path):
    data = mutated(lambda d: d["sources"]["warehouse"].update(url="postgresql://reader@db.internal:5432/prod"))
    assert load_catalog(write_catalog(tmp_path, data)).sources["warehouse"].url.startswith("postgresql://")


# ------------------------------------------------------------------ unknown keys


def test_unknown_top_level_key(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d.update(snapshot_defaults={"key": ["id"]})))
    msg = catalog_error(path)
    assert_names(msg, path, "(top level)", "snapshot_defaults")
    assert "unknown field" in msg


def test_unknown_key_in_a_source(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(statment_timeout_s=5)))
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "statment_timeout_s")
    assert "unknown field" in msg


def test_field_of_another_kind_is_unknown_in_a_source(tmp_path):
    # a sqlite source has no url: an error, not a silent default
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["local_db"].update(url="x")))
    assert_names(catalog_error(path), path, "sources.local_db", "url")


def test_unknown_key_in_a_snapshot(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(keys=["id"])))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "keys")
    assert "unknown field" in msg


def test_unknown_key_in_partitions(tmp_path):
    path = write_catalog(
        tmp_path, mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(timezone="UTC"))
    )
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "partitions.timezone")
    assert "unknown field" in msg


# ------------------------------------------------------------------ partitions


@pytest.mark.parametrize("cadence", ["yearly", "Daily", "", "15min"])
def test_bad_cadence(tmp_path, cadence):
    path = write_catalog(
        tmp_path, mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(cadence=cadence))
    )
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "partitions.cadence")
    assert "daily" in msg  # says what is allowed


def test_bad_partition_start(tmp_path):
    path = write_catalog(
        tmp_path, mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(start="yesterday"))
    )
    assert_names(catalog_error(path), path, "snapshots.customer_data", "partitions.start")


def test_partition_end_before_start(tmp_path):
    path = write_catalog(
        tmp_path,
        mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(end="2023-12-01")),
    )
    msg = catalog_error(path)
    assert str(path) in msg and "snapshots.customer_data" in msg and "partitions" in msg
    assert "end must be after start" in msg


# ------------------------------------------------------------------ sources


def test_unknown_source(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(source="warehous")))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "source")
    assert "'warehous'" in msg and "warehouse" in msg  # the bad name and the known ones


def test_unknown_source_kind_names_the_kind_field(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(kind="oracle")))
    msg = catalog_error(path)
    assert "unknown kind" in msg and "postgres" in msg
    assert_names(msg, path, "sources.warehouse", "kind")


def test_missing_source_kind_names_the_kind_field(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].pop("kind")))
    assert_names(catalog_error(path), path, "sources.warehouse", "kind")


def test_literal_password_in_postgres_url(tmp_path):
    secret = "s3cr3t-pw-123"
    path = write_catalog(
        tmp_path,
        mutated(lambda d: d["sources"]["warehouse"].update(url=f"postgresql://reader:{secret}@db:5432/prod")),
    )
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "url")
    assert "password" in msg and "env" in msg
    assert secret not in msg  # the error text must not repeat the secret


def test_literal_password_in_env_default(tmp_path):
    secret = "s3cr3t-pw-456"
    path = write_catalog(
        tmp_path,
        mutated(lambda d: d["sources"]["warehouse"].update(
            url={"env": "WAREHOUSE_URL", "default": f"postgresql://reader:{secret}@db/prod"})),
    )
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "url")
    assert "password" in msg
    assert secret not in msg


def test_bad_source_numbers(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(statement_timeout_s=-1)))
    assert_names(catalog_error(path), path, "sources.warehouse", "statement_timeout_s")


# ------------------------------------------------------------------ queries


def test_query_without_partition_start(tmp_path):
    q = "SELECT * FROM t WHERE d < :partition_end"
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=q)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "query")
    assert ":partition_start" in msg


def test_query_without_partition_end(tmp_path):
    q = "SELECT * FROM t WHERE d >= :partition_start"
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=q)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "query")
    assert ":partition_end" in msg


def test_query_with_window_only_in_comments_and_literals(tmp_path):
    q = "SELECT ':partition_start' FROM t -- :partition_end\nWHERE true"
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=q)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "query")
    assert ":partition_start" in msg and ":partition_end" in msg


def test_query_with_unknown_parameter(tmp_path):
    q = WINDOW_QUERY + "  AND region = :region"
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=q)))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "query")
    assert ":region" in msg


def test_query_with_casts_and_time_literals_is_valid(tmp_path):
    q = ("SELECT id, created::date, to_char(created, 'HH24:MI') FROM t\n"
         "WHERE created >= :partition_start::timestamptz AND created < :partition_end::timestamptz\n"
         "  AND to_char(created, 'HH24:MI') <> '10:30'")
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(query=q)))
    assert load_catalog(path).snapshots["customer_data"].query == q


# ------------------------------------------------------------------ names and tags


@pytest.mark.parametrize("bad", ["Customer_Data", "customer-data", "../x", "a/b", ".hidden", "1st", "customer data"])
def test_bad_snapshot_names(tmp_path, bad):
    def rename(d):
        d["snapshots"][bad] = d["snapshots"].pop("customer_data")

    path = write_catalog(tmp_path, mutated(rename))
    msg = catalog_error(path)
    assert str(path) in msg
    assert f"snapshots.{bad}" in msg
    assert "field '" in msg
    assert "[a-z]" in msg  # says what a name may be


@pytest.mark.parametrize("bad", ["Warehouse", "a/b", "../etc"])
def test_bad_source_names(tmp_path, bad):
    def rename(d):
        d["sources"][bad] = d["sources"].pop("warehouse")
        d["snapshots"]["customer_data"]["source"] = bad

    path = write_catalog(tmp_path, mutated(rename))
    msg = catalog_error(path)
    assert str(path) in msg and f"sources.{bad}" in msg and "field '" in msg


@pytest.mark.parametrize("value", ["has space", "semi;colon", "x" * 64, "quote'"])
def test_invalid_tag_values(tmp_path, value):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(tags={"domain": value})))
    msg = catalog_error(path)
    assert str(path) in msg and "snapshots.customer_data" in msg
    assert "field 'tags" in msg
    assert "'domain'" in msg  # which tag


def test_non_string_tag_value(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(tags={"tier": 1})))
    assert_names(catalog_error(path), path, "snapshots.customer_data", "tags.tier")


def test_invalid_tag_key(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(tags={"bad key": "x"})))
    msg = catalog_error(path)
    assert_names(msg, path, "snapshots.customer_data", "tags")
    assert "'bad key'" in msg


def test_empty_key_list(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["snapshots"]["customer_data"].update(key=[])))
    assert_names(catalog_error(path), path, "snapshots.customer_data", "key")


def test_every_problem_is_listed(tmp_path):
    def two_problems(d):
        d["snapshots"]["customer_data"]["partitions"]["cadence"] = "yearly"
        d["sources"]["warehouse"]["colour"] = "blue"

    path = write_catalog(tmp_path, mutated(two_problems))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert len(info.value.problems) == 2
    msg = str(info.value)
    assert "field 'partitions.cadence'" in msg and "field 'colour'" in msg
    assert all(str(path) in p for p in info.value.problems)


# ------------------------------------------------------------------ the file itself


def test_yaml_syntax_error(tmp_path):
    path = write_catalog(tmp_path, "sources:\n  warehouse:\n    kind: postgres\n   url: [unclosed\n")
    msg = catalog_error(path)
    assert str(path) in msg
    assert "YAML" in msg
    assert "line" in msg  # where in the file


def test_document_that_is_not_a_mapping(tmp_path):
    path = write_catalog(tmp_path, "- just\n- a list\n")
    msg = catalog_error(path)
    assert str(path) in msg and "mapping" in msg


def test_empty_file(tmp_path):
    path = write_catalog(tmp_path, "")
    assert str(path) in catalog_error(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "snapshots.yaml"
    msg = catalog_error(path)
    assert str(path) in msg
    assert "cannot read" in msg


# ------------------------------------------------------------------ definitions: fail to load, never connect


def _load_definitions(tmp_path: Path, catalog: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPSHOT_PLATFORM_", "DAGSTER_HOME"))}
    env.update(
        SNAPSHOT_PLATFORM_HOME=str(tmp_path / "home"),
        SNAPSHOT_PLATFORM_CATALOG=str(catalog),
        SNAPSHOT_PLATFORM_STORAGE_URL=str(tmp_path / "storage"),
        PYTHONWARNINGS="ignore",
    )
    env.pop("WAREHOUSE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", "import snapshot_platform.definitions as d; print(sorted(k.to_user_string() "
         "for k in d.defs.resolve_all_asset_keys()))"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )


def test_definitions_fail_to_load_with_a_bad_catalog(tmp_path):
    data = mutated(lambda d: d["snapshots"]["customer_data"]["partitions"].update(cadence="yearly"))
    path = write_catalog(tmp_path, data, "bad_catalog.yaml")
    started = time.monotonic()
    proc = _load_definitions(tmp_path, path)
    assert proc.returncode != 0, proc.stdout
    assert str(path) in proc.stderr
    assert "snapshots.customer_data" in proc.stderr
    assert "field 'partitions.cadence'" in proc.stderr
    assert "CatalogError" in proc.stderr
    # the source URL points at a closed port (127.0.0.1:1): a connection attempt would show up as
    # a connection error instead of the catalog error, and take the connect timeout
    assert "connect" not in proc.stderr.lower()
    assert time.monotonic() - started < 60


def test_definitions_load_without_connecting_to_sources(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        data = mutated(lambda d: d["sources"]["warehouse"].update(
            url={"env": "WAREHOUSE_URL", "default": f"postgresql://reader@127.0.0.1:{port}/prod"}))
        path = write_catalog(tmp_path, data, "good_catalog.yaml")
        proc = _load_definitions(tmp_path, path)
        assert proc.returncode == 0, proc.stderr
        assert "snapshots/customer_data" in proc.stdout
        with pytest.raises(BlockingIOError):
            conn, _ = listener.accept()  # nobody knocked
            conn.close()
    finally:
        listener.close()


def test_definitions_fail_on_literal_password_without_leaking_it(tmp_path):
    secret = "hunter2-xyz"
    data = mutated(lambda d: d["sources"]["warehouse"].update(url=f"postgresql://reader:{secret}@127.0.0.1:1/prod"))
    path = write_catalog(tmp_path, data, "leaky.yaml")
    proc = _load_definitions(tmp_path, path)
    assert proc.returncode != 0
    assert str(path) in proc.stderr and "sources.warehouse" in proc.stderr and "field 'url'" in proc.stderr
    assert secret not in proc.stderr and secret not in proc.stdout


# ------------------------------------------------------------------ passwords in any form, ambiguous URLs


@pytest.mark.parametrize("kind,url", [
    ("postgres", "postgresql://reader@db:5432/prod?sslmode=require&password={secret}"),
    ("postgres", "host=db port=5432 dbname=prod user=reader password={secret}"),
    ("postgres", "host=db dbname=prod password='{secret}' user=reader"),
    ("mysql", "mysql://reader@db:3306/shop?password={secret}"),
    ("redshift", "postgresql://reader@cluster:5439/dev?password={secret}"),
    ("postgres", "postgresql://reader:{secret}#rest@db:5432/prod"),  # an unencoded '#' in the password
    ("postgres", "postgresql://reader:{secret}/rest@db:5432/prod"),  # ... a '/'
])
@pytest.mark.parametrize("as_default", [False, True], ids=["literal", "env_default"])
def test_a_literal_password_in_a_query_parameter_or_keyword_string_is_refused(tmp_path, kind, url, as_default):
    secret = "s3cr3tPw789"
    value = url.format(secret=secret)
    source = {"kind": kind, "url": {"env": "SOME_URL", "default": value} if as_default else value}
    if kind == "redshift":
        source["sslmode"] = "disable"
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"].update(warehouse=source)))
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "url")
    assert "literal password" in msg
    assert secret not in msg and "rest@" not in msg


def test_an_ambiguous_url_without_password_is_refused_without_quoting_it(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(
        url="postgresql://reader@db:port5432x/prod")))
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "url")
    assert "percent-encoded" in msg and "port5432x" not in msg


def test_allow_privileged_role_is_a_source_field(tmp_path):
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(allow_privileged_role=True)))
    assert load_catalog(path).sources["warehouse"].allow_privileged_role is True
    assert load_catalog(write_catalog(tmp_path, BASE, "b.yaml")).sources["warehouse"].allow_privileged_role is False
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"]["warehouse"].update(allow_privileged_role="maybe")))
    assert_names(catalog_error(path), path, "sources.warehouse", "allow_privileged_role")


@pytest.mark.parametrize("role", ["ACCOUNTADMIN", "sysadmin", "SecurityAdmin", "ORGADMIN"])
def test_a_snowflake_administrative_role_is_refused_unless_allowed(tmp_path, role):
    source = {"kind": "snowflake", "account": "acme", "user": "reader", "password": {"env": "SF_PW"}, "role": role}
    path = write_catalog(tmp_path, mutated(lambda d: d["sources"].update(warehouse=source)))
    msg = catalog_error(path)
    assert_names(msg, path, "sources.warehouse", "(the entry)")
    assert role in msg and "allow_privileged_role" in msg
    allowed = write_catalog(tmp_path, mutated(lambda d: d["sources"].update(
        warehouse={**source, "allow_privileged_role": True})), "allowed.yaml")
    assert load_catalog(allowed).sources["warehouse"].role == role


# ------------------------------------------------------------------ hostile and big YAML


ALIAS_BOMB = """\
sources:
  local_db: {kind: sqlite, path: demo.sqlite}
snapshots:
  s:
    source: local_db
    query: "SELECT id FROM t WHERE d >= date(:partition_start) AND d < date(:partition_end)"
    partitions: {cadence: daily, start: "2024-01-01"}
    key: [id]
models:
  churn:
    snapshot: s
    features: [a]
    target: b
    estimator:
      class: sklearn.dummy.DummyClassifier
      params:
        strategy: &a [x, x, x, x, x, x, x, x, x]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
        f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
        g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
        h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
        i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_naming_file_entry_and_field(tmp_path):
    """Nine levels of nine aliases: 1 KB of YAML expanding to 430 million nodes. Refused while the
    document is still a graph of shared nodes (the bound is on nodes, so the test needs no clock)."""
    assert len(ALIAS_BOMB) < 1200
    path = write_catalog(tmp_path, ALIAS_BOMB)
    msg = catalog_error(path)
    assert_names(msg, path, "models.churn", "estimator.params.i")
    assert "aliases expand" in msg


def test_ordinary_anchors_and_aliases_still_load(tmp_path):
    """A shared block of checks used by many entries is what anchors are for: it loads."""
    text = yaml.safe_dump(BASE, sort_keys=False).replace(
        "    tags:\n      domain: growth\n", "    tags: &tags\n      domain: growth\n")
    for i in range(300):
        text += (f"  copy_{i}:\n    source: warehouse\n    query: \"{WINDOW_QUERY.replace(chr(10), ' ')}\"\n"
                 "    partitions: {cadence: daily, start: '2024-01-01'}\n    key: [customer_id]\n    tags: *tags\n")
    catalog = load_catalog(write_catalog(tmp_path, text))
    assert catalog.snapshots["copy_299"].tags == {"domain": "growth"}


def test_the_catalog_is_parsed_by_libyaml_when_pyyaml_has_it():
    from snapshot_platform.catalog import loading as catalog

    assert yaml.__with_libyaml__, "PyYAML is installed without libyaml: big catalogs load several times slower"
    assert catalog._YamlLoader is yaml.CSafeLoader
