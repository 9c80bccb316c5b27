"""The distributed topology end to end (deploy/cluster.py, docs/deployment.md).

Two Celery workers, each with its own working directory, temp dir and DAGSTER_HOME folder, sharing
only the broker (a RabbitMQ virtual host of this test's own), the instance database (PostgreSQL),
object storage (moto's S3) and an MLflow tracking server (PostgreSQL backend, S3 artifacts). A
backfill of 30 partitions of a PostgreSQL snapshot and a model is launched through the webserver
and run by the daemon; one worker is killed (SIGKILL, its whole process group) while it runs a
snapshot query. Afterwards every partition has exactly one published version that verifies, the
model's MLflow run has its lineage and ``reproduce`` passes, no run is left STARTED, and the source
never saw more concurrent snapshot queries than ``max_concurrent_queries`` (pg_stat_activity sampled
throughout the backfill).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from snapshot_platform_tests.conftest import REPO_ROOT, missing_peer, reader_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

PARTITIONS = 30
FIRST_DAY = dt.date(2024, 1, 1)
MAX_QUERIES = 2
PER_RUN = 5  # the backfill policy's partitions per run (SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN)
SNAPSHOT_RUNS = -(-PARTITIONS // PER_RUN)


def load_cluster_module() -> Any:
    """deploy/cluster.py, the launcher `make cluster` runs (deploy/ is not a package)."""
    name = "sp_deploy_cluster"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "deploy" / "cluster.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def rabbitmq() -> tuple[str, int]:
    """RabbitMQ at 127.0.0.1:5672 (guest/guest) with rabbitmqctl for a per-test virtual host."""
    cluster = load_cluster_module()
    if not cluster.port_open("127.0.0.1", 5672):
        missing_peer("RabbitMQ is not running at 127.0.0.1:5672 (start it: rabbitmq-server -detached)")
    if shutil.which("rabbitmqctl") is None:
        missing_peer("rabbitmqctl is not installed (the test makes a RabbitMQ virtual host of its own)")
    return "127.0.0.1", 5672


def make_source(url: str) -> None:
    """customer_data: 30 days of signups, a few dozen a day, deterministic."""
    import psycopg

    rng = random.Random(13)
    rows, cid = [], 1
    for d in range(PARTITIONS):
        day = FIRST_DAY + dt.timedelta(days=d)
        for _ in range(40 + rng.randint(0, 20)):
            purchases, tenure = rng.randint(0, 40), rng.randint(1, 900)
            churn = int(0.65 - 0.012 * purchases - 0.0006 * tenure + rng.uniform(-0.15, 0.15) > 0.3)
            rows.append((cid, day, purchases, tenure, round(rng.uniform(5, 250), 2), churn))
            cid += 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customer_data (customer_id int PRIMARY KEY, signup_date date NOT NULL, "
                     "total_purchases int NOT NULL, tenure_days int NOT NULL, avg_order_value numeric(10,2) NOT NULL, "
                     "churn_label int NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customer_data VALUES (%s, %s, %s, %s, %s, %s)", rows)


CATALOG = {
    "sources": {
        "warehouse": {"kind": "postgres", "url": {"env": "WAREHOUSE_URL"}, "statement_timeout_s": 60,
                      "max_concurrent_queries": MAX_QUERIES},
    },
    "snapshots": {
        "customer_data": {
            "source": "warehouse",
            # pg_sleep holds each query open for a second, so that concurrent queries overlap visibly
            "query": "WITH pause AS (SELECT pg_sleep(1))\n"
                     "SELECT c.customer_id, c.signup_date, c.total_purchases, c.tenure_days, c.avg_order_value,\n"
                     "       c.churn_label\n"
                     "FROM customer_data c CROSS JOIN pause\n"
                     "WHERE c.signup_date >= :partition_start AND c.signup_date < :partition_end\n",
            "partitions": {"cadence": "daily", "start": FIRST_DAY.isoformat(),
                           "end": (FIRST_DAY + dt.timedelta(days=PARTITIONS)).isoformat()},
            "key": ["customer_id"],
            "not_null": ["customer_id", "signup_date"],
            "checks": {"min_rows": 10},
        },
    },
    "models": {
        "churn": {
            "snapshot": "customer_data",
            "partitions": 3,
            "features": ["total_purchases", "tenure_days", "avg_order_value"],
            "target": "churn_label",
            "estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                          "params": {"n_estimators": 20, "max_depth": 4, "random_state": 0}},
            "split": {"test_fraction": 0.25, "by": "customer_id"},
        },
    },
}

LAUNCH_BACKFILL = """
mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""


def launch_backfill(webserver: str, last: str) -> str:
    """A backfill of every snapshot partition and the model's last partition, through the webserver."""
    params = {"partitionsByAssets": [
        {"assetKey": {"path": ["snapshots", "customer_data"]},
         "partitions": {"range": {"start": FIRST_DAY.isoformat(), "end": last}}},
        {"assetKey": {"path": ["models", "churn"]}, "partitions": {"range": {"start": last, "end": last}}},
    ]}
    body = json.dumps({"query": LAUNCH_BACKFILL, "variables": {"p": params}}).encode()
    req = urllib.request.Request(f"{webserver}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.loads(r.read())["data"]["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


class QuerySampler(threading.Thread):
    """Counts the source's snapshot sessions in a transaction or a query, every 50 ms; keeps the maximum."""

    def __init__(self, admin_url: str, database: str) -> None:
        super().__init__(daemon=True)
        self.admin_url, self.database = admin_url, database
        self.stop_event = threading.Event()
        self.maximum, self.samples, self.error = 0, 0, None

    def active(self, conn: Any) -> list[tuple[int, int]]:
        """(pid, client_port) of the reader's sessions that are running or inside a read."""
        return conn.execute(
            "SELECT pid, client_port FROM pg_stat_activity WHERE datname = %s AND usename = 'snapshot_reader' "
            "AND state IS NOT NULL AND state <> 'idle'", (self.database,)).fetchall()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                while not self.stop_event.is_set():
                    self.maximum = max(self.maximum, len(self.active(conn)))
                    self.samples += 1
                    self.stop_event.wait(0.05)
        except Exception as exc:  # reported by the test
            self.error = exc


def wait_until(what: str, ok: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ok()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def worker_ports(pid: int) -> set[int]:
    """Local TCP ports of a process and its children (the worker's database connections among them)."""
    import psutil

    ports = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return ports
    for p in procs:
        try:
            ports |= {c.laddr.port for c in p.net_connections(kind="tcp") if c.laddr}
        except psutil.Error:
            pass
    return ports


def test_backfill_on_celery_workers_survives_a_killed_worker(
    pg_server: str, pg_database: str, moto_server: Any, rabbitmq: Any, write_catalog: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg
    from dagster import DagsterInstance
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import DagsterRunStatus

    cluster_mod = load_cluster_module()
    make_source(pg_database)
    source_db = pg_database.rsplit("/", 1)[1]
    catalog = write_catalog(CATALOG)
    suffix = uuid.uuid4().hex[:8]
    prefix, vhost, bucket = f"sp_e2e_{suffix}", f"sp_e2e_{suffix}", f"sp-e2e-{suffix}"
    aws = moto_server.environ()
    state = tmp_path / "cluster"
    sampler = QuerySampler(pg_server, source_db)
    cluster = None
    try:
        cluster = cluster_mod.up(state, workers=2, worker_concurrency=2, db_prefix=prefix, vhost=vhost,
                                 s3_endpoint=moto_server.endpoint, bucket=bucket, catalog=str(catalog),
                                 extra_env={**aws, "WAREHOUSE_URL": reader_url(pg_database),
                                            "SNAPSHOT_PLATFORM_BACKFILL_PARTITIONS_PER_RUN": str(PER_RUN)},
                                 max_concurrent_runs=4)
        for k, v in cluster.env.items():  # this process reads the same instance, storage and MLflow
            if k.startswith(("DAGSTER_", "AWS_", "MLFLOW_", "SNAPSHOT_PLATFORM_")):
                monkeypatch.setenv(k, v)
        monkeypatch.setenv("DAGSTER_HOME", str(state / "dagster_home"))
        sampler.start()
        last = (FIRST_DAY + dt.timedelta(days=PARTITIONS - 1)).isoformat()
        backfill_id = launch_backfill(cluster.urls["dagster"], last)

        # kill worker-1 (its whole process group) while one of its processes runs a snapshot query
        victim = cluster.process("worker-1")["pid"]
        with psycopg.connect(pg_server, autocommit=True) as conn:
            def victim_querying() -> bool:
                return bool({port for _, port in sampler.active(conn)} & worker_ports(victim))
            wait_until("worker-1 to run a snapshot query", victim_querying, timeout=240, poll=0.1)
        cluster.kill("worker-1")
        instance = DagsterInstance.get()
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED, "killed after the backfill"

        terminal = {BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED,
                    BulkActionStatus.CANCELED, BulkActionStatus.COMPLETED}
        status = wait_until("the backfill to finish",
                            lambda: (s := instance.get_backfill(backfill_id).status) in terminal and s, timeout=480)
        unfinished = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                      DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING}
        wait_until("every run to finish", lambda: not [r for r in instance.get_runs() if r.status in unfinished],
                   timeout=120)
        sampler.stop_event.set()
        sampler.join(10)

        runs = instance.get_runs()
        failed = {r.run_id: [e.message for e in instance.all_logs(r.run_id)
                             if e.dagster_event and e.dagster_event.is_failure][:3]
                  for r in runs if r.status != DagsterRunStatus.SUCCESS}
        assert status == BulkActionStatus.COMPLETED_SUCCESS, (status, failed)
        assert not failed and len(runs) == SNAPSHOT_RUNS + 1, failed  # ranged snapshot runs, the model's
        assert not [r for r in runs if r.status == DagsterRunStatus.STARTED]

        # the steps ran on the Celery workers; the killed worker's step ran again on the other one
        executions: dict[tuple[str, str], list[str]] = {}
        for r in runs:
            for e in instance.all_logs(r.run_id):
                if e.dagster_event and "in celery worker" in (e.message or ""):
                    worker = e.dagster_event.engine_event_data.metadata["Celery worker"].value
                    executions.setdefault((r.run_id, e.step_key), []).append(worker)
        assert len(executions) == SNAPSHOT_RUNS + 1, "every step, snapshots and the model, ran in a Celery worker"
        names = cluster.info["workers"]
        assert {w for ws in executions.values() for w in ws} == {names["worker-1"], names["worker-2"]}
        redelivered = [ws for ws in executions.values() if len(ws) > 1]
        assert redelivered and all(ws[0] == names["worker-1"] and ws[-1] == names["worker-2"] for ws in redelivered), \
            executions

        # never more concurrent source queries than max_concurrent_queries, and the pool was used
        assert sampler.error is None, sampler.error
        assert sampler.samples > 100
        assert 1 <= sampler.maximum <= MAX_QUERIES, sampler.maximum

        # every partition: exactly one published version, and it proves itself
        from snapshot_platform.store import SnapshotStore

        store = SnapshotStore(f"s3://{bucket}/storage")
        partitions = [(FIRST_DAY + dt.timedelta(days=d)).isoformat() for d in range(PARTITIONS)]
        assert store.partitions("customer_data") == partitions
        versions = {}
        for pk in partitions:
            found = store.versions("customer_data", pk)
            assert len(found) == 1, (pk, [m.version for m in found])
            assert store.verify_version(found[0]) == [], pk
            versions[pk] = found[0].version

        # the model's MLflow run: its lineage is the three pinned versions; reproduce passes
        import mlflow

        from snapshot_platform.training.mlflow_logging import TAG_DAGSTER_PARTITION

        client = mlflow.MlflowClient(cluster.urls["mlflow"])
        model_runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                        filter_string=f"tags.`{TAG_DAGSTER_PARTITION}` = '{last}'")
        assert len(model_runs) == 1, [r.data.tags for r in model_runs]
        run = model_runs[0]
        digests = sorted(d.dataset.digest for d in run.inputs.dataset_inputs  # the evaluation split aside
                         if {t.key: t.value for t in d.tags}.get("mlflow.data.context") == "training")
        assert digests == sorted(versions[p] for p in partitions[-3:])
        reproduce = subprocess.run([str(Path(sys.executable).parent / "snapshot-platform"), "reproduce", run.info.run_id],
                                   env={**cluster.env, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
                                   capture_output=True, text=True, timeout=300)
        assert reproduce.returncode == 0, reproduce.stdout + reproduce.stderr
    finally:
        sampler.stop_event.set()
        if cluster is not None:
            cluster.stop()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            for db in (f"{prefix}_dagster", f"{prefix}_mlflow"):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True, timeout=60)
