"""The distributed topology on one machine, for a trial and for the end-to-end test.

    python deploy/cluster.py up   [--state .cluster] [--workers 2]     (make cluster)
    python deploy/cluster.py down [--state .cluster]                   (make cluster-down)

`up` starts, each on a free port where it listens: moto (S3), an MLflow tracking server (backend in
PostgreSQL, artifacts in S3), dagster-daemon, dagster-webserver and Celery workers (dagster-celery),
each worker with its own working directory, temp dir and DAGSTER_HOME folder; they share only the
broker (a RabbitMQ virtual host of its own), the instance database, S3 and MLflow. PostgreSQL and
RabbitMQ are used where they run, and started when absent. Every process started is recorded in
`<state>/state.json` (pid and start time), and `down` stops exactly those (never a process it did not
start: a recycled pid has another start time) and the servers `up` itself started. The layout and
what each process needs are in docs/deployment.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE_FILE = "state.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(what: str, ok: Any, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``ok()`` until it is true; fail after ``timeout`` or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok():
                return
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s:\n{tail}")
        time.sleep(0.25)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


@dataclass
class Cluster:
    """What `up` started; saved in ``<state>/state.json`` so that `down` (or a test) stops exactly that."""

    state: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)  # name, pid, create_time, log
    services: list[dict[str, Any]] = field(default_factory=list)  # name, stop (argv)
    urls: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        doc = {"processes": self.processes, "services": self.services, "urls": self.urls, "info": self.info,
               "env_keys": sorted(self.env)}
        (self.state / STATE_FILE).write_text(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, state: Path) -> Cluster:
        doc = json.loads((state / STATE_FILE).read_text())
        return cls(state, processes=doc["processes"], services=doc["services"], urls=doc["urls"], info=doc["info"])

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        import psutil

        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with open(log, "ab") as out:
            # a session (and process group) of its own: stopping it stops its children too
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append({"name": name, "pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                               "log": str(log)})
        self.save()
        return proc

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def process(self, name: str) -> dict[str, Any]:
        return next(p for p in self.processes if p["name"] == name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of the process ``name`` started, if it is still that process."""
        p = self.process(name)
        if _ours(p):
            try:
                os.killpg(p["pid"], sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 20) -> None:
        """Stop every process started, newest first (SIGTERM, then SIGKILL), then the servers started."""
        import psutil

        for p in reversed(self.processes):
            if not _ours(p):
                continue
            try:
                os.killpg(p["pid"], signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                psutil.Process(p["pid"]).wait(timeout)
            except psutil.TimeoutExpired:
                pass
            except psutil.NoSuchProcess:
                pass
            try:  # whatever of the group is left (children outliving their parent included)
                os.killpg(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        for s in reversed(self.services):
            subprocess.run(s["stop"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        self.processes, self.services = [], []
        self.save()


def _ours(p: dict[str, Any]) -> bool:
    import psutil

    try:
        return abs(psutil.Process(p["pid"]).create_time() - p["create_time"]) < 0.01
    except psutil.NoSuchProcess:
        return False


def ensure_postgres(cluster: Cluster, host: str, port: int) -> None:
    if port_open(host, port):
        return
    clusters = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").exists() else []
    if not clusters or not shutil.which("pg_ctlcluster"):
        raise RuntimeError(f"PostgreSQL is not running at {host}:{port} and no local cluster to start was found")
    version = clusters[-1].parent.name
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
    cluster.services.append({"name": "postgresql", "stop": ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop"]})
    cluster.save()
    wait_for("PostgreSQL", lambda: port_open(host, port), 60)


def ensure_rabbitmq(cluster: Cluster, host: str, port: int) -> None:
    if port_open(host, port):
        return
    if not shutil.which("rabbitmq-server"):
        raise RuntimeError(f"RabbitMQ is not running at {host}:{port} and rabbitmq-server is not installed")
    subprocess.run(["rabbitmq-server", "-detached"], check=True)
    cluster.services.append({"name": "rabbitmq", "stop": ["rabbitmqctl", "stop"]})
    cluster.save()
    wait_for("RabbitMQ", lambda: port_open(host, port), 120)


def ensure_vhost(cluster: Cluster, vhost: str, user: str = "guest") -> None:
    """A RabbitMQ virtual host of this deployment's own, so that two deployments never share a queue."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], check=True, capture_output=True, text=True).stdout
    if vhost not in listed.split():
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, stdout=subprocess.DEVNULL)
        cluster.info["vhost_created"] = True
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], check=True,
                   stdout=subprocess.DEVNULL)


def ensure_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def up(state: Path, *, workers: int = 2, worker_concurrency: int = 2, pg_host: str = "127.0.0.1",
       pg_port: int = 5432, pg_user: str = "postgres", pg_password: str = "", db_prefix: str = "sp_cluster",
       rabbit_host: str = "127.0.0.1", rabbit_port: int = 5672, vhost: str = "snapshot_platform",
       s3_endpoint: str | None = None, bucket: str = "snapshot-platform", catalog: str | None = None,
       extra_env: dict[str, str] | None = None, max_concurrent_runs: int | None = None) -> Cluster:
    """Start the topology; returns the :class:`Cluster` (its ``urls``, ``env``), recorded in ``state``."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if (state / STATE_FILE).exists() and any(_ours(p) for p in Cluster.load(state).processes):
        raise RuntimeError(f"a cluster started from {state} is still running: stop it first (make cluster-down)")
    cluster = Cluster(state)
    cluster.save()
    try:
        _up(cluster, workers, worker_concurrency, pg_host, pg_port, pg_user, pg_password, db_prefix, rabbit_host,
            rabbit_port, vhost, s3_endpoint, bucket, catalog, extra_env or {}, max_concurrent_runs)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _up(cluster: Cluster, workers: int, worker_concurrency: int, pg_host: str, pg_port: int, pg_user: str,
        pg_password: str, db_prefix: str, rabbit_host: str, rabbit_port: int, vhost: str, s3_endpoint: str | None,
        bucket: str, catalog: str | None, extra_env: dict[str, str], max_concurrent_runs: int | None) -> None:
    import boto3
    import yaml

    state = cluster.state
    ensure_postgres(cluster, pg_host, pg_port)
    ensure_rabbitmq(cluster, rabbit_host, rabbit_port)
    ensure_vhost(cluster, vhost)
    cluster.info["vhost"] = vhost
    auth = pg_user if not pg_password else f"{pg_user}:{pg_password}"
    admin_url = f"postgresql://{auth}@{pg_host}:{pg_port}/postgres"
    dagster_db, mlflow_db = f"{db_prefix}_dagster", f"{db_prefix}_mlflow"
    for db in (dagster_db, mlflow_db):
        ensure_database(admin_url, db)
    cluster.info["databases"] = [dagster_db, mlflow_db]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MLFLOW_", "SNAPSHOT_PLATFORM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra_env)
    if s3_endpoint is None:  # moto's S3 for the trial
        port = free_port()
        s3_endpoint = f"http://127.0.0.1:{port}"
        proc = cluster.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, state)
        wait_for("moto", lambda: http_ok(f"{s3_endpoint}/moto-api/"), 60, proc, cluster.log("moto"))
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
    env["AWS_ENDPOINT_URL"] = s3_endpoint
    env["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=env.get("AWS_REGION", "us-east-1"),
                      aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"), aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    cluster.urls["s3"] = s3_endpoint

    home = state / "home"  # the demo's generated source lives here; nothing of a worker does
    home.mkdir(exist_ok=True)
    if catalog is None:
        from snapshot_platform.demo import source_db

        demo_db = home / "demo" / "production.sqlite"
        if not demo_db.exists():
            source_db.create(demo_db)
        env["SNAPSHOT_PLATFORM_DEMO_DB"] = str(demo_db)  # absolute: every worker reads the same file
    env.update({
        "DAGSTER_PG_HOST": pg_host, "DAGSTER_PG_PORT": str(pg_port), "DAGSTER_PG_DB": dagster_db,
        "DAGSTER_PG_USER": pg_user, "DAGSTER_PG_PASSWORD": pg_password,
        "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
        "DAGSTER_CELERY_BROKER_URL": f"pyamqp://guest:guest@{rabbit_host}:{rabbit_port}/{vhost}",
        "SNAPSHOT_PLATFORM_EXECUTOR": "celery",
        "SNAPSHOT_PLATFORM_STORAGE_URL": f"s3://{bucket}/storage",
        "SNAPSHOT_PLATFORM_HOME": str(home),
    })
    if catalog:
        env["SNAPSHOT_PLATFORM_CATALOG"] = str(Path(catalog).resolve())

    dagster_yaml = yaml.safe_load((REPO / "deploy" / "dagster.cluster.yaml").read_text())
    if max_concurrent_runs is not None:
        dagster_yaml["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs

    def dagster_home(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        (where / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml, sort_keys=False))
        return where

    # MLflow: tracking server, backend in PostgreSQL, artifacts in S3 (proxied: clients need no S3 access)
    mlflow_port = free_port()
    mlflow_env = {**env, "MLFLOW_TRACKING_URI": ""}
    proc = cluster.start("mlflow", [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
        "--backend-store-uri", f"postgresql+psycopg2://{auth}@{pg_host}:{pg_port}/{mlflow_db}",
        "--artifacts-destination", f"s3://{bucket}/mlflow",
    ], mlflow_env, state)
    cluster.urls["mlflow"] = f"http://127.0.0.1:{mlflow_port}"
    env["MLFLOW_TRACKING_URI"] = cluster.urls["mlflow"]
    wait_for("MLflow server", lambda: http_ok(f"{cluster.urls['mlflow']}/health"), 120, proc, cluster.log("mlflow"))

    # the pools' limits from the catalog, written into the instance before any run
    control = {**env, "DAGSTER_HOME": str(dagster_home(state / "dagster_home"))}
    subprocess.run([str(BIN / "snapshot-platform"), "pools", "--apply"], env=control, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)

    workspace = str(REPO / "workspace.yaml")
    daemon = cluster.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], control, state)
    web_port = free_port()
    web = cluster.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                      "-w", workspace], control, state)
    cluster.urls["dagster"] = f"http://127.0.0.1:{web_port}"

    names = []
    for i in range(1, workers + 1):
        name = f"worker-{i}"
        wdir = state / name
        (wdir / "tmp").mkdir(parents=True, exist_ok=True)
        wenv = {**env, "DAGSTER_HOME": str(dagster_home(wdir / "dagster_home")), "TMPDIR": str(wdir / "tmp"),
                "SNAPSHOT_PLATFORM_HOME": str(wdir / "home")}
        node = f"{name}-{uuid.uuid4().hex[:6]}"
        cluster.start(name, [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                             "-y", str(REPO / "deploy" / "celery.yaml"), "-n", node, "--",
                             "--concurrency", str(worker_concurrency)], wenv, wdir)
        cluster.info.setdefault("workers", {})[name] = f"{node}@{socket.gethostname()}"
        names.append(cluster.info["workers"][name])
    cluster.env = env
    cluster.save()

    wait_for("dagster-webserver", lambda: http_ok(f"{cluster.urls['dagster']}/server_info"), 180, web,
             cluster.log("webserver"))
    wait_for("Celery workers", lambda: set(names) <= set(ping_workers(env["DAGSTER_CELERY_BROKER_URL"])), 180)
    if daemon.poll() is not None:
        raise RuntimeError(f"dagster-daemon exited: {cluster.log('daemon').read_text(errors='replace')[-3000:]}")


def ping_workers(broker: str) -> list[str]:
    """Names of the Celery workers answering on ``broker``."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        return [name for reply in (app.control.ping(timeout=1.0) or []) for name in reply]
    finally:
        app.close()


def down(state: Path) -> int:
    state = state.resolve()
    if not (state / STATE_FILE).exists():
        print(f"nothing to stop: no cluster state in {state}")
        return 0
    cluster = Cluster.load(state)
    n = sum(1 for p in cluster.processes if _ours(p))
    cluster.stop()
    print(f"stopped {n} process group(s) started from {state}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the topology in the background")
    p_up.add_argument("--state", type=Path, default=REPO / ".cluster")
    p_up.add_argument("--workers", type=int, default=2)
    p_down = sub.add_parser("down", help="stop exactly what `up` started")
    p_down.add_argument("--state", type=Path, default=REPO / ".cluster")
    args = parser.parse_args(argv)
    if args.command == "down":
        return down(args.state)
    cluster = up(args.state, workers=args.workers, catalog=os.environ.get("SNAPSHOT_PLATFORM_CATALOG") or None)
    print(f"Dagster UI: {cluster.urls['dagster']}")
    print(f"MLflow: {cluster.urls['mlflow']}")
    print(f"(S3 at {cluster.urls['s3']}, logs in {cluster.state / 'logs'}; stop with: make cluster-down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
