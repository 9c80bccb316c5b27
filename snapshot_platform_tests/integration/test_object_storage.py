"""Snapshot storage on S3, GCS and Azure Blob, each against a local peer (see docs/storage.md).

- S3: s3fs against moto's server mode (``moto.server.ThreadedMotoServer``), bucket versioning on so
  that a rewrite of any object would show as a new object version;
- GCS: gcsfs against ``gcp-storage-emulator``, run in this process. The emulator ignores
  ``ifGenerationMatch`` (it overwrites); the ``gcs_emulator`` fixture adds exactly that rule to it,
  as GCS documents it, so the race tests can run; ``test_gcs_emulator_alone_ignores_if_generation_match``
  shows the gap and fails the day the emulator closes it;
- Azure Blob: adlfs against Azurite (npm package ``azurite``, installed on first use into a cache
  folder beside the virtualenv, see ``azurite_blob_executable``).

For each backend: publish writes the manifest last; publishing the same content again writes nothing;
two concurrent publishers of one version: one wins, both get that version; a flipped byte in a stored
part is caught by ``read_table`` and ``verify_version`` (naming the file); staging is cleaned up; a
publisher that fails, or is killed with SIGKILL mid-upload, leaves no visible version; and
``dagster.materialize`` of a snapshot asset with ``SNAPSHOT_PLATFORM_STORAGE_URL`` on the backend, with
credentials from the environment only, which never reach the manifest or Dagster's metadata.

A missing server or emulator skips these tests locally and fails them under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterator

import fsspec
import pyarrow as pa
import pytest

from snapshot_platform.store import IntegrityError, SnapshotStore, WriterSettings, backends, sha256_text
from snapshot_platform_tests.conftest import missing_peer
from snapshot_platform_tests.npm_tools import npm_package, tool_dir

AZURITE_VERSION = "3.35.0"  # the newest Azurite whose engines allow Node 20 (3.36 wants 21, 3.37 wants 22)
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret: every Azurite install accepts it).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Fake AWS credentials, distinctive so that a leak into a manifest or metadata would be found.
AWS_KEY_ID = "AKIASNAPSHOTPLATFORM"
AWS_SECRET = "fake-secret-7d1c0b5e-do-not-leak"
BUCKET = "snapshots-test"

ASSET = "customer_data"
PARTITION = "2024-01-01"
QUERY = "SELECT * FROM customers WHERE d >= :partition_start AND d < :partition_end"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
SMALL = WriterSettings(row_group_rows=1000, part_rows=3000)  # several parts from a few thousand rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


# ------------------------------------------------------------------ the peers


@dataclass
class Peer:
    """One object store peer: how to reach it through the store, and directly (bypassing the store)."""

    name: str  # s3 | gcs | az
    scheme: str
    bucket: str
    env: dict[str, str]  # what points the backend's client library at the peer, credentials included
    storage_options: dict[str, Any]
    keys: Callable[[str], dict[str, str]]  # prefix -> {key: identity that changes on every write}
    get: Callable[[str], bytes]
    put: Callable[[str, bytes], None]
    secrets: tuple[str, ...] = ()  # strings that must never appear in manifests or metadata
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, prefix: str) -> str:
        return f"{self.scheme}://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Peer]:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        missing_peer(f"moto[server] / boto3 not installed: {exc}")
    env = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001
        missing_peer(f"moto's S3 server did not start: {exc}")
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
        )
        client.create_bucket(Bucket=BUCKET)
        # with versioning, every write of a key is a new version: "nothing rewritten" is checkable
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

        def keys(prefix: str) -> dict[str, str]:
            out = {}
            for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix):
                for v in page.get("Versions", []):
                    if v["IsLatest"]:
                        out[v["Key"]] = v["VersionId"]
            return out

        def get(key: str) -> bytes:
            return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        def put(key: str, data: bytes) -> None:
            client.put_object(Bucket=BUCKET, Key=key, Body=data)

        yield Peer(
            "s3", "s3", BUCKET, {**env, "SP_TEST_ENDPOINT": endpoint},
            {"client_kwargs": {"endpoint_url": endpoint}}, keys, get, put,
            secrets=(AWS_KEY_ID, AWS_SECRET), extra={"client": client, "endpoint": endpoint},
        )
    finally:
        server.stop()


def _gcs_insert_honouring_if_generation_match(insert: Callable[..., Any]) -> Callable[..., Any]:
    """The emulator's object insert, plus GCS's rule: ``ifGenerationMatch=0`` on an existing object -> 412."""
    from gcp_storage_emulator.exceptions import NotFound

    def handler(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if request.query.get("ifGenerationMatch") == ["0"]:
            name = request.query.get("name", [None])[0]
            data = request.data
            if name is None and isinstance(data, dict):
                name = (data.get("meta") or data).get("name")
            try:
                storage.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {
                    "code": 412,
                    "message": "At least one of the pre-conditions you specified did not hold.",
                    "errors": [{"reason": "conditionNotMet", "locationType": "header",
                                "location": "If-Match", "domain": "global",
                                "message": "At least one of the pre-conditions you specified did not hold."}],
                }})
                return None
        return insert(request, response, storage, *args, **kwargs)

    return handler


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Peer]:
    try:
        import gcsfs.core
        from gcp_storage_emulator import server as emulator
        from gcp_storage_emulator.handlers import objects
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
    except ImportError as exc:
        missing_peer(f"gcsfs / gcp-storage-emulator / google-cloud-storage not installed: {exc}")
    registry = importlib.import_module("fsspec.registry")  # the module; fsspec.registry is a mapping
    srv = emulator.create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)
    srv._api.daemon = True  # never keep the test process alive
    try:
        srv.start()
    except Exception as exc:  # noqa: BLE001
        missing_peer(f"gcp-storage-emulator did not start: {exc}")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(srv.stop)
        endpoint = f"http://127.0.0.1:{srv._api._httpd.server_port}"

        # gcsfs >= 2026.8 makes GCSFileSystem the "extended" class, which first asks the Storage
        # Control gRPC API for the bucket's layout: the emulator has no such API, and each bucket
        # costs a 60 s timeout. Use the plain JSON-API class here (and
        # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false in subprocesses); against real GCS the extended
        # class is fine.
        saved = {p: registry._registry.get(p) for p in ("gs", "gcs")}

        def restore_registry() -> None:
            for p, cls in saved.items():
                if cls is None:
                    registry._registry.pop(p, None)
                else:
                    registry._registry[p] = cls

        cleanup.callback(restore_registry)
        for p in saved:
            registry.register_implementation(p, gcsfs.core.GCSFileSystem, clobber=True)

        # the emulator routes (regex, {method: handler}): give its upload route GCS's precondition
        upload_routes = [h for _, h in emulator.HANDLERS if h.get("POST") is objects.insert]
        assert upload_routes, "gcp-storage-emulator changed its routes: revisit the precondition shim"

        def set_preconditions(on: bool) -> None:
            for handlers in upload_routes:
                handlers["POST"] = (
                    _gcs_insert_honouring_if_generation_match(objects.insert) if on else objects.insert
                )

        set_preconditions(True)
        cleanup.callback(set_preconditions, False)
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": endpoint})
        bucket = client.bucket(BUCKET)

        def keys(prefix: str) -> dict[str, str]:
            return {b.name: str(b.generation) for b in client.list_blobs(BUCKET, prefix=prefix)}

        def get(key: str) -> bytes:
            return bucket.blob(key).download_as_bytes()

        def put(key: str, data: bytes) -> None:
            bucket.blob(key).upload_from_string(data)

        yield Peer(
            "gcs", "gs", BUCKET,
            {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
            {"token": "anon"}, keys, get, put, extra={"set_preconditions": set_preconditions},
        )


def azurite_blob_executable() -> Path:
    """``azurite-blob`` at AZURITE_VERSION: $SNAPSHOT_PLATFORM_AZURITE_BLOB, else installed once with npm
    (into $SNAPSHOT_PLATFORM_AZURITE_DIR, else beside the virtualenv)."""
    explicit = os.environ.get("SNAPSHOT_PLATFORM_AZURITE_BLOB")
    if explicit:
        return Path(explicit)
    folder = tool_dir("azurite", "SNAPSHOT_PLATFORM_AZURITE_DIR")
    npm_package(folder, "azurite", AZURITE_VERSION)
    return folder / "node_modules" / ".bin" / "azurite-blob"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError as exc:
        missing_peer(f"azure-storage-blob / adlfs not installed: {exc}")
    exe = azurite_blob_executable()
    workspace = tmp_path_factory.mktemp("azurite")
    log_path = workspace / "azurite.log"
    proc, port = None, 0
    for _ in range(3):  # the port is free when chosen; another process could take it before Azurite
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(exe), "--inMemoryPersistence", "--extentMemoryLimit", "512", "--blobHost", "127.0.0.1",
                 "--blobPort", str(port), "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workspace,
            )
        if wait_for_port(port, proc, timeout=60):
            break
        proc.kill()
        proc.wait()
        proc = None
    if proc is None:
        missing_peer(f"Azurite did not start: {log_path.read_text(errors='replace')[-2000:]}")
    try:
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
        container = BlobServiceClient.from_connection_string(connection_string).create_container(BUCKET)

        def keys(prefix: str) -> dict[str, str]:
            return {b.name: str(b.etag) for b in container.list_blobs(name_starts_with=prefix)}

        def get(key: str) -> bytes:
            return container.download_blob(key).readall()

        def put(key: str, data: bytes) -> None:
            container.upload_blob(key, data, overwrite=True)

        yield Peer(
            "az", "az", BUCKET, {"AZURE_STORAGE_CONNECTION_STRING": connection_string},
            {}, keys, get, put, secrets=(AZURITE_KEY,),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PEERS = {"s3": "moto_s3", "gcs": "gcs_emulator", "az": "azurite"}


@pytest.fixture(params=list(PEERS))
def peer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Peer]:
    """Each backend in turn, with its environment applied for the test."""
    p: Peer = request.getfixturevalue(PEERS[request.param])
    for k, v in p.env.items():
        if not k.startswith("SP_TEST_"):
            monkeypatch.setenv(k, v)
    yield p
    # fsspec caches filesystems by their options, not by the environment they were made in:
    # drop them, so no later test gets a client configured from this test's environment
    fsspec.get_filesystem_class(p.scheme).clear_instance_cache()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    """The local folder the store writes each part to before its upload (store/upload.py)."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def store(peer: Peer, prefix: str, uploads: Path) -> SnapshotStore:
    return SnapshotStore(peer.url(prefix), settings=SMALL, storage_options=peer.storage_options,
                         upload_tmp_dir=str(uploads))


def assert_nothing_in_flight(peer: Peer, prefix: str, uploads: Path) -> None:
    """No staged object, no publish intent in the bucket, no temporary file on local disk."""
    assert not [k for k in peer.keys(prefix + "/") if "/.staging/" in k or "/.intents/" in k]
    assert list(uploads.iterdir()) == []


# ------------------------------------------------------------------ helpers


def manifest_fields(**override: Any) -> dict[str, Any]:
    fields = {
        "window": {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"},
        "query": QUERY,
        "query_sha256": sha256_text(QUERY),
        "params": {"partition_start": "2024-01-01T00:00:00+00:00",
                   "partition_end": "2024-01-02T00:00:00+00:00"},
        "source": {"name": "test_db", "kind": "sqlite", "host": None, "database": "test.sqlite"},
        "source_state": None,
        "dagster_run_id": None,
        "code_version": "0123456789ab",
        "library_versions": {"pyarrow": pa.__version__},
    }
    fields.update(override)
    return fields


def make_table(n: int, salt: str = "") -> pa.Table:
    ids = list(range(n))
    return pa.table({"id": ids, "name": [f"c-{i}{salt}" for i in ids], "score": [i * 0.5 for i in ids]},
                    schema=SCHEMA)


def publish(store: SnapshotStore, table: pa.Table, **fields: Any) -> Any:
    batches = table.to_batches(max_chunksize=700)
    return store.publish(ASSET, PARTITION, table.schema, batches, manifest_fields(**fields))


def version_prefix(prefix: str, version: str) -> str:
    return f"{prefix}/snapshots/{ASSET}/{PARTITION}/{version}/"


# ------------------------------------------------------------------ publishing


def test_publish_copies_every_part_before_the_manifest(peer, store, prefix, monkeypatch):
    seen: list[dict[str, str]] = []
    real = backends.create_exclusive

    def spy(fs: Any, path: str, data: bytes, **kw: Any) -> bool:
        # the version folder and the shared parts, now
        seen.append({**peer.keys(path.split("/", 1)[1].rsplit("/", 1)[0] + "/"), **peer.keys(prefix + "/parts/")})
        return real(fs, path, data, **kw)

    monkeypatch.setattr(backends, "create_exclusive", spy)
    result = publish(store, make_table(7000))

    assert result.created is True
    parts = [f.path for f in result.manifest.files]
    assert len(parts) == 3 and all(p.startswith("parts/") for p in parts)  # shared, named by content
    folder = version_prefix(prefix, result.version)
    [before_manifest] = seen
    assert sorted(before_manifest) == sorted(f"{prefix}/{p}" for p in parts)  # all parts, no manifest yet
    assert sorted(peer.keys(prefix + "/")) == sorted([folder + "manifest.json", *(f"{prefix}/{p}" for p in parts)])
    assert json.loads(peer.get(folder + "manifest.json")) == json.loads(json.dumps(result.manifest.as_dict()))
    assert result.uri == f"{peer.scheme}://{peer.bucket}/{folder.rstrip('/')}"

    assert store.assets() == [ASSET] and store.partitions(ASSET) == [PARTITION]
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [result.version]
    assert store.read_table(ASSET, PARTITION).equals(make_table(7000))
    assert store.verify_version(result.manifest) == []


def test_republishing_the_same_content_writes_nothing(peer, store, prefix):
    first = publish(store, make_table(5000))
    published = peer.keys(prefix + "/")
    again = publish(store, make_table(5000))

    assert again.created is False
    assert again.version == first.version
    assert again.manifest.as_dict() == json.loads(json.dumps(first.manifest.as_dict()))
    now = peer.keys(prefix + "/")
    # same objects, none written again, staging gone; only retention's touch marker (store/retention.py)
    assert {k: v for k, v in now.items() if "/.touched/" not in k} == published
    assert set(now) - set(published) == {f"{prefix}/.touched/{ASSET}/{PARTITION}/{first.version}.json"}

    changed = publish(store, make_table(5000, salt="x"))  # different rows: a new version beside the old
    assert changed.created is True and changed.version != first.version
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [first.version, changed.version]
    assert {k: v for k, v in peer.keys(prefix + "/").items() if k in published} == published


def observe_writes(fs: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(method, key) of every write the store makes through ``fs``: observed and passed on unchanged
    to the real server."""
    seen: list[tuple[str, str]] = []
    where = {"put_file": 1, "pipe_file": 0, "copy": 1, "cp_file": 1, "open": 0}

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            mode = kwargs.get("mode", args[1] if name == "open" and len(args) > 1 else "rb")
            if name != "open" or any(c in mode for c in "wax"):
                seen.append((name, str(args[where[name]]).split("/", 1)[1]))
            return real(*args, **kwargs)
        return call

    for name in where:
        monkeypatch.setattr(fs, name, wrap(name, getattr(fs, name)))
    return seen


def test_a_second_version_uploads_only_its_new_parts(peer, prefix, uploads, monkeypatch, caplog):
    """Parts are uploaded straight to their content key, and only those not stored yet: nothing is
    staged in the bucket, nothing copied server-side (S3: also counted in moto's own request log)."""
    caplog.set_level(logging.INFO, logger="werkzeug")  # moto's server logs each request it answers
    store = SnapshotStore(peer.url(prefix), storage_options=peer.storage_options, upload_tmp_dir=str(uploads),
                          settings=WriterSettings(row_group_rows=1000, part_rows=8000, part_min_rows=200,
                                                  part_boundary_modulus=500))
    writes = observe_writes(store.root.fs, monkeypatch)

    def part_writes() -> list[str]:
        assert not [k for _, k in writes if "/.staging/" in k]
        assert {m for m, k in writes if "/parts/" in k} <= {"put_file"}  # an upload, never a copy
        return sorted(k for _, k in writes if "/parts/" in k)

    def s3_requests(method: str, folder: str) -> int:
        return sum(f'"{method} /{BUCKET}/{prefix}/{folder}/' in r.getMessage() for r in caplog.records)

    first = publish(store, make_table(5000)).manifest
    assert part_writes() == sorted(f"{prefix}/{f.path}" for f in first.files)
    stored = peer.keys(prefix + "/parts/")
    writes.clear()
    caplog.clear()

    second = publish(store, make_table(5100)).manifest  # 100 rows more at the end: most parts shared
    new = sorted({f.path for f in second.files} - {f.path for f in first.files})
    assert new and len(new) < len(second.files) / 2, (new, second.files)
    assert part_writes() == [f"{prefix}/{p}" for p in new]
    assert {k: v for k, v in peer.keys(prefix + "/parts/").items() if k in stored} == stored  # none rewritten
    if peer.name == "s3":
        assert s3_requests("PUT", "parts") == len(new)
        assert s3_requests("PUT", ".staging") == s3_requests("POST", "parts") == 0
    assert_nothing_in_flight(peer, prefix, uploads)
    for m in (first, second):
        assert store.verify_version(store.read_manifest(ASSET, PARTITION, m.version)) == []


def test_upload_exclusive_creates_a_large_object_once(peer, prefix, tmp_path):
    """The create-if-absent upload itself, with a file large enough for the backend's upload in pieces
    (S3 multipart with 5 MiB blocks, GCS resumable above 5 MiB): one object, whole; a second upload
    to the key is refused and leaves it as it was; overwrite replaces it."""
    options = dict(peer.storage_options)
    if peer.name == "s3":
        options["default_block_size"] = 5 * 2**20
    fs = SnapshotStore(peer.url(prefix), storage_options=options).root.fs
    big, late, small = tmp_path / "big", tmp_path / "late", tmp_path / "small"
    big.write_bytes(os.urandom(11 * 2**20 + 7))
    late.write_bytes(os.urandom(11 * 2**20 + 7))
    small.write_bytes(b"other bytes")
    key = f"{prefix}/parts/ab/big.parquet"
    assert backends.upload_exclusive(fs, str(big), f"{peer.bucket}/{key}") is True
    assert peer.get(key) == big.read_bytes()
    identity = peer.keys(key)
    for other in (late, small):  # refused in pieces (S3: at CompleteMultipartUpload) and whole
        assert backends.upload_exclusive(fs, str(other), f"{peer.bucket}/{key}") is False
        assert peer.keys(key) == identity and peer.get(key) == big.read_bytes()
    assert backends.upload_exclusive(fs, str(small), f"{peer.bucket}/{key}", overwrite=True) is True
    assert peer.get(key) == b"other bytes"
    if peer.name == "s3":
        assert peer.extra["client"].list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/").get("Uploads", []) == []


def test_concurrent_publishers_of_one_version_one_wins(peer, prefix, monkeypatch):
    """Both publishers copy their parts, then both try to create the manifest at the same instant."""
    barrier = threading.Barrier(2, timeout=60)
    real = backends.create_exclusive

    def together(fs: Any, path: str, data: bytes, **kw: Any) -> bool:
        barrier.wait()
        return real(fs, path, data, **kw)

    monkeypatch.setattr(backends, "create_exclusive", together)
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            s = SnapshotStore(peer.url(prefix), settings=SMALL, storage_options=peer.storage_options)
            results[i] = publish(s, make_table(4000), code_version=f"publisher-{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(r.created for r in results) == [False, True]
    winner = next(r for r in results if r.created)
    loser = next(r for r in results if not r.created)
    assert loser.version == winner.version
    assert loser.manifest.as_dict() == json.loads(json.dumps(winner.manifest.as_dict()))  # the loser reports the winner's
    store = SnapshotStore(peer.url(prefix), storage_options=peer.storage_options)
    [stored] = store.versions(ASSET, PARTITION)
    assert stored.code_version == winner.manifest.code_version
    assert store.verify_version(stored) == []
    assert store.read_table(ASSET, PARTITION).num_rows == 4000
    assert not [k for k in peer.keys(prefix + "/") if "/.staging/" in k]


def test_exclusive_create_has_exactly_one_winner(peer, prefix):
    """The backend's conditional create itself: eight writers race for one key."""
    store = SnapshotStore(peer.url(prefix), storage_options=peer.storage_options)
    fs, path = store.root.fs, f"{peer.bucket}/{prefix}/race/manifest.json"
    barrier = threading.Barrier(8, timeout=60)
    outcomes: dict[int, bool] = {}

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = backends.create_exclusive(fs, path, f"writer {i}".encode())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, created in outcomes.items() if created]
    assert len(outcomes) == 8 and len(winners) == 1, outcomes
    assert peer.get(f"{prefix}/race/manifest.json") == f"writer {winners[0]}".encode()
    assert backends.create_exclusive(fs, path, b"late") is False
    assert peer.get(f"{prefix}/race/manifest.json") == f"writer {winners[0]}".encode()


def test_gcs_emulator_alone_ignores_if_generation_match(gcs_emulator, prefix, monkeypatch):
    """Why ``gcs_emulator`` adds a precondition: gcsfs sends ifGenerationMatch=0, the emulator overwrites.

    When this fails, the emulator has learnt the precondition: drop the shim in ``gcs_emulator``.
    """
    for k, v in gcs_emulator.env.items():
        monkeypatch.setenv(k, v)
    fs = SnapshotStore(gcs_emulator.url(prefix), storage_options=gcs_emulator.storage_options).root.fs
    path = f"{BUCKET}/{prefix}/manifest.json"
    gcs_emulator.extra["set_preconditions"](False)
    try:
        assert backends.create_exclusive(fs, path, b"first") is True
        assert backends.create_exclusive(fs, path, b"second") is True  # real GCS answers 412 here
        assert gcs_emulator.get(f"{prefix}/manifest.json") == b"second"
    finally:
        gcs_emulator.extra["set_preconditions"](True)


# ------------------------------------------------------------------ integrity


def test_a_flipped_byte_is_caught_on_read_and_by_verify(peer, store, prefix):
    result = publish(store, make_table(7000))
    part = result.manifest.files[1].path
    key = f"{prefix}/{part}"
    data = bytearray(peer.get(key))
    data[len(data) // 2] ^= 0xFF
    peer.put(key, bytes(data))  # straight to the bucket, past the store

    part_uri = f"{peer.scheme}://{peer.bucket}/{key}"
    with pytest.raises(IntegrityError, match=part):
        store.read_table(ASSET, PARTITION)
    with pytest.raises(IntegrityError) as caught:
        for _ in store.iter_batches(result.manifest):
            pass
    assert part_uri in str(caught.value)
    [problem] = store.verify_version(result.manifest)
    assert problem.startswith(part_uri) and "sha256" in problem

    # re-publishing the same rows finds the version published: it reports it and repairs nothing
    assert publish(store, make_table(7000)).created is False


def test_a_missing_part_is_reported(peer, store, prefix):
    result = publish(store, make_table(4000))
    key = f"{prefix}/{result.manifest.files[0].path}"
    store.root.fs.rm(f"{peer.bucket}/{key}")
    [problem] = store.verify_version(result.manifest)
    assert problem == f"{peer.scheme}://{peer.bucket}/{key}: missing, listed in the manifest"
    with pytest.raises(IntegrityError, match="missing"):
        store.read_table(ASSET, PARTITION)


# ------------------------------------------------------------------ failures leave no version


def test_a_source_failing_mid_snapshot_leaves_no_version(peer, store, prefix, uploads):
    """The parts uploaded before the failure stay, invisible (no manifest names them, no intent):
    the next publisher of those rows reuses them, gc sweeps them once stale."""
    import datetime as dt

    from snapshot_platform.store.gc import collect_garbage

    def failing() -> Iterator[pa.RecordBatch]:
        yield from make_table(5000).to_batches(max_chunksize=1000)
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        store.publish(ASSET, PARTITION, SCHEMA, failing(), manifest_fields())
    assert store.versions(ASSET, PARTITION) == []
    left = peer.keys(prefix + "/")
    assert left and all(k.startswith(prefix + "/parts/") for k in left)
    assert_nothing_in_flight(peer, prefix, uploads)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    found = collect_garbage(store, dt.timedelta(hours=1), now=later)
    assert {(f.kind, f.removed) for f in found} == {("unreferenced_part", True)}
    assert peer.keys(prefix + "/") == {}


def test_a_refused_write_fails_in_one_line_naming_where(peer, prefix, uploads):
    """The server refuses the publish's first write (its bucket does not exist): one line naming the
    cause and where; the temporary file is gone."""
    from snapshot_platform.store import StorageWriteError

    missing = f"{peer.scheme}://no-such-bucket-{uuid.uuid4().hex[:8]}/{prefix}"
    store = SnapshotStore(missing, settings=SMALL, storage_options=peer.storage_options, upload_tmp_dir=str(uploads))
    with pytest.raises(StorageWriteError) as caught:
        publish(store, make_table(100))
    message = str(caught.value)
    assert "\n" not in message and message.endswith(f" writing {missing}/.intents"), message
    assert list(uploads.iterdir()) == []


def test_a_refused_part_upload_fails_in_one_line_naming_the_part(azurite, prefix, uploads, monkeypatch):
    """Azure: a damaged part (another size than its name says) held under a lease; the publish that
    needs the part replaces it, and Azurite refuses (412 LeaseIdMissing): one line naming the part,
    no version, nothing in flight left behind, the leased object untouched."""
    from azure.storage.blob import BlobServiceClient

    from snapshot_platform.store import StorageWriteError

    for k, v in azurite.env.items():
        monkeypatch.setenv(k, v)
    store = SnapshotStore(azurite.url(prefix), settings=SMALL, storage_options=azurite.storage_options,
                          upload_tmp_dir=str(uploads))
    first = publish(store, make_table(100))
    part = f"{prefix}/{first.manifest.files[0].path}"
    azurite.put(part, b"truncated")
    container = BlobServiceClient.from_connection_string(azurite.env["AZURE_STORAGE_CONNECTION_STRING"]) \
        .get_container_client(BUCKET)
    lease = container.get_blob_client(part).acquire_lease(lease_duration=-1)
    try:
        with pytest.raises(StorageWriteError) as caught:
            publish(store, make_table(100), code_version="again")
        message = str(caught.value)
        assert "\n" not in message and message.endswith(f" writing az://{BUCKET}/{part}"), message
        assert azurite.get(part) == b"truncated"
        assert_nothing_in_flight(azurite, prefix, uploads)
    finally:
        lease.release()
        fsspec.get_filesystem_class("az").clear_instance_cache()


def test_dying_between_the_parts_and_the_manifest_leaves_no_version(peer, store, prefix, monkeypatch):
    def killed(*args: Any, **kwargs: Any) -> bool:
        raise SystemExit("killed before the manifest")

    with monkeypatch.context() as m:
        m.setattr(backends, "create_exclusive", killed)
        with pytest.raises(SystemExit):
            publish(store, make_table(5000))
    leftovers = peer.keys(prefix + "/")
    assert leftovers and all(k.startswith(prefix + "/parts/") for k in leftovers)  # its shared parts only
    assert store.versions(ASSET, PARTITION) == []  # parts without a manifest are not a version

    result = publish(store, make_table(5000))  # the next publisher completes the version
    assert result.created is True
    assert {k: v for k, v in peer.keys(prefix + "/").items() if k in leftovers} == leftovers  # reused, not copied
    assert store.read_table(ASSET, PARTITION).num_rows == 5000
    assert store.verify_version(result.manifest) == []


def test_retention_sweeps_only_parts_no_manifest_references(peer, prefix):
    """Two versions of one partition share parts; retention deletes the older's manifest, then the
    parts only it referenced (moved aside, checked again, deleted); a part held by a publish's intent
    stays; the kept version verifies and nothing is left under .staging/."""
    import datetime as dt

    from snapshot_platform.store import retention

    store = SnapshotStore(peer.url(prefix), storage_options=peer.storage_options, settings=WriterSettings(
        row_group_rows=1000, part_rows=8000, part_min_rows=200, part_boundary_modulus=500))
    old = publish(store, make_table(5000)).manifest
    new = publish(store, make_table(5100)).manifest  # 100 rows more at the end: the first parts shared
    only_old = sorted({f.sha256 for f in old.files} - {f.sha256 for f in new.files})
    assert only_old and {f.sha256 for f in old.files} & {f.sha256 for f in new.files}
    intent = retention.write_intent(store, only_old[:1])  # a publish about to reference one of them
    done = retention.apply_retention(store, 1, None, set(), grace=dt.timedelta(0))
    assert [i.version for i in done.items if i.deleted] == [old.version]
    assert sorted(done.sweep.parts) == only_old[1:]
    keys = peer.keys(prefix + "/")
    assert f"{prefix}/parts/{only_old[0][:2]}/{only_old[0]}.parquet" in keys
    assert not any(f"{prefix}/parts/{sha[:2]}/{sha}.parquet" in keys for sha in only_old[1:])
    assert not [k for k in keys if "/.staging/" in k]
    retention.remove_intent(store, intent)
    assert store.verify_version(store.read_manifest(ASSET, PARTITION, new.version)) == []


@pytest.mark.parametrize("publish_first", [True, False], ids=["publish-then-sweep", "sweep-then-publish"])
def test_a_publish_reusing_parts_while_gc_sweeps_them_keeps_them(peer, store, prefix, uploads, monkeypatch,
                                                                  publish_first):
    """The race of shared parts on object stores, where each part's intent is written as the part
    closes. Another partition gets the rows of a version gc deletes, so it reuses its parts.
    publish-then-sweep: the publish found every part stored (nothing uploaded) and is held before
    its manifest while gc deletes the version and sweeps: its intents keep every part.
    sweep-then-publish: gc is held with the parts moved aside while the publish runs whole: it finds
    them absent and uploads its own; gc's second look sees its manifest and deletes nothing."""
    import datetime as dt

    from snapshot_platform.store import publish as publish_module
    from snapshot_platform.store import retention

    old = publish(store, make_table(3000, salt="old")).manifest
    publish(store, make_table(3000, salt="new"))
    table = make_table(3000, salt="old")
    held, release = threading.Event(), threading.Event()
    writes = observe_writes(store.root.fs, monkeypatch)

    def hold(name: str) -> None:
        held.set()
        assert release.wait(60)

    def publish_again() -> Any:
        return store.publish(ASSET, "2024-01-02", SCHEMA, table.to_batches(max_chunksize=700), manifest_fields())

    def gc() -> Any:
        return retention.apply_retention(store, 1, None, set(), grace=dt.timedelta(0))

    result: dict[str, Any] = {}
    old_parts = sorted(f"{prefix}/{f.path}" for f in old.files)
    if publish_first:
        monkeypatch.setattr(publish_module, "_step", lambda name: hold(name) if name == "parts_placed" else None)
        racer = threading.Thread(target=lambda: result.update(again=publish_again()))
        racer.start()
        assert held.wait(60)  # every part of old found stored, the manifest not yet written
        assert not [k for _, k in writes if "/parts/" in k]  # so none was uploaded
        done = gc()
        assert done.items[0].deleted and done.sweep.parts == ()  # the intents kept every part
        release.set()
        racer.join(60)
    else:
        monkeypatch.setattr(retention, "_sweep_step", hold)
        sweeper = threading.Thread(target=lambda: result.update(done=gc()))
        sweeper.start()
        assert held.wait(60)  # old's manifest deleted, its parts moved aside
        assert not set(old_parts) & set(peer.keys(prefix + "/parts/"))
        writes.clear()
        result["again"] = publish_again()
        assert sorted(k for m, k in writes if m == "put_file" and "/parts/" in k) == old_parts  # uploaded anew
        release.set()
        sweeper.join(60)
        assert result["done"].sweep.parts == ()  # gc saw the new manifest and deleted nothing
    again = result["again"]
    assert again.created and again.version == old.version
    assert store.verify_version(store.read_manifest(ASSET, "2024-01-02", again.version)) == []
    assert_nothing_in_flight(peer, prefix, uploads)


def test_a_version_published_again_while_gc_deletes_it_stays(peer, store, prefix, monkeypatch):
    """gc has deleted an old version's manifest when a publish of the same rows places it again: gc
    deletes the folder's fingerprints by name, never the manifest key, and keeps the version."""
    import datetime as dt

    from snapshot_platform.store import fingerprints, retention

    old = publish(store, make_table(3000, salt="old")).manifest
    fingerprints.record(store, old, {"n": 1})
    publish(store, make_table(3000, salt="new"))
    again: list[Any] = []

    def step(name: str, _item: Any) -> None:
        if name == "manifest_deleted":
            again.append(publish(store, make_table(3000, salt="old")))

    monkeypatch.setattr(retention, "_step", step)
    done = retention.apply_retention(store, 1, None, set(), grace=dt.timedelta(0))
    assert [i.deleted for i in done.items] == [False] and again[0].created and again[0].version == old.version
    kept = store.read_manifest(ASSET, PARTITION, old.version)
    assert store.verify_version(kept) == [] and done.sweep.parts == ()
    assert not [k for k in peer.keys(prefix + "/") if "/fingerprints/" in k]


def test_gc_removes_stale_intents_and_their_parts_and_keeps_every_published_object(peer, store, prefix,
                                                                                    monkeypatch):
    import datetime as dt

    from snapshot_platform.store import retention
    from snapshot_platform.store.gc import collect_garbage

    kept = publish(store, make_table(3000, salt="kept"))

    def failing() -> Iterator[pa.RecordBatch]:
        yield from make_table(5000).to_batches(max_chunksize=1000)
        raise ConnectionError("source went away")

    with monkeypatch.context() as m:  # a writer that died before it could remove its intents
        m.setattr(retention, "remove_intents", lambda store, intents: None)
        with pytest.raises(ConnectionError):
            store.publish(ASSET, PARTITION, SCHEMA, failing(), manifest_fields())
        m.setattr(backends, "create_exclusive", lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed")))
        with pytest.raises(SystemExit):  # and one that died between its parts and its manifest
            publish(store, make_table(4000, salt="torn"))
    intents = {k for k in peer.keys(prefix + "/") if "/.intents/" in k}
    assert len(intents) >= 2, "the dead writers left their intents (one per part)"
    assert not [k for k in peer.keys(prefix + "/") if "/.staging/" in k]  # nothing staged in the bucket
    published = {k: v for k, v in peer.keys(prefix + "/").items() if "/.intents/" not in k}

    found = collect_garbage(store, dt.timedelta(hours=1))  # everything is young: nothing removed
    assert {f.kind for f in found} == {"intent"} and len(found) == len(intents), found
    assert not any(f.removed for f in found) and intents <= set(peer.keys(prefix + "/"))

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    found = collect_garbage(store, dt.timedelta(hours=1), now=later)
    assert {(f.kind, f.removed) for f in found} == {("intent", True), ("unreferenced_part", True)}
    torn = {f"{prefix}/parts/{f.uri.rsplit('/', 1)[1][:2]}/{f.uri.rsplit('/', 1)[1]}"
            for f in found if f.kind == "unreferenced_part"}  # the dead publishers' parts: no manifest names them
    assert torn and not torn & {f"{prefix}/{f.path}" for f in kept.manifest.files}
    assert peer.keys(prefix + "/") == {k: v for k, v in published.items() if k not in torn}
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [kept.version]
    assert store.verify_version(kept.manifest) == []


KILLED_PUBLISHER = textwrap.dedent(
    """
    import builtins, json, os, signal, sys
    import pyarrow as pa
    from snapshot_platform.store import SnapshotStore, WriterSettings

    url, options, fields, tmp, kill_at = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    rows, width, total = 16384, 64, 24 * 2**20
    schema = pa.schema([("id", pa.int64()), ("blob", pa.binary(width))])
    # one part of incompressible rows, written to a local temporary file, then uploaded in pieces
    # where the backend does (S3 multipart in 5 MiB blocks, one at a time; GCS resumable): SIGKILL
    # lands when the upload reads the file for the kill_at-th time, i.e. in the middle of the upload
    store = SnapshotStore(url, settings=WriterSettings(row_group_rows=rows, part_rows=10**9, part_min_rows=10**9),
                          storage_options=options, upload_tmp_dir=tmp)
    real_open, reads = builtins.open, [0]

    class Killing:
        def __init__(self, f):
            self._f = f
        def read(self, *args):
            reads[0] += 1
            if reads[0] >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return self._f.read(*args)
        def __getattr__(self, name):
            return getattr(self._f, name)
        def __iter__(self):
            return iter(self._f)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self._f.close()

    def observed_open(file, mode="r", *args, **kwargs):  # passes every call on; counts the upload's reads
        f = real_open(file, mode, *args, **kwargs)
        return Killing(f) if str(file).startswith("/proc/self/fd/") and "r" in mode else f

    builtins.open = observed_open

    def batches():
        for start in range(0, total // width, rows):
            blob = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows,
                                                       [None, pa.py_buffer(os.urandom(rows * width))])
            yield pa.record_batch([pa.array(range(start, start + rows), pa.int64()), blob], schema=schema)

    store.publish("blobs", "2024-01-01", schema, batches(), fields)
    print("not killed: the upload never read the part", file=sys.stderr)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the temporary part is read through /proc/self/fd")
def test_a_publisher_killed_mid_upload_leaves_no_visible_object(peer, prefix, uploads):
    options = dict(peer.storage_options)
    kill_at = 1
    if peer.name == "s3":  # the S3 minimum part size, one part at a time: killed after the first part
        options.update(default_block_size=5 * 2**20, max_concurrency=1)
        kill_at = 2
    env = {**os.environ, **{k: v for k, v in peer.env.items() if not k.startswith("SP_TEST_")}}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISHER, peer.url(prefix), json.dumps(options),
         json.dumps(manifest_fields()), str(uploads), str(kill_at)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]

    store = SnapshotStore(peer.url(prefix), storage_options=peer.storage_options)
    assert store.versions("blobs", "2024-01-01") == []
    [intent] = peer.keys(prefix + "/")  # not even a partial part is visible: only the part's intent
    assert intent.startswith(f"{prefix}/.intents/"), intent
    assert list(uploads.iterdir()) == []  # the temporary part had no name: gone with the process
    if peer.name == "s3":
        # the upload really was under way: S3 holds it as an incomplete multipart upload, which is
        # invisible and billed until aborted (docs/storage.md: the lifecycle rule that aborts them)
        client = peer.extra["client"]
        uploads_s3 = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/").get("Uploads", [])
        assert [u["Key"].split("/")[1] for u in uploads_s3] == ["parts"]
        assert client.list_parts(Bucket=BUCKET, Key=uploads_s3[0]["Key"],
                                 UploadId=uploads_s3[0]["UploadId"]).get("Parts")  # a block was sent
        for u in uploads_s3:
            client.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])


# ------------------------------------------------------------------ listing


def test_listing_sees_versions_another_process_published(peer, store, prefix):
    first = publish(store, make_table(3000))
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [first.version]  # listings cached
    assert store.assets() == [ASSET]
    other = SnapshotStore(peer.url(prefix), settings=SMALL,
                          storage_options={**peer.storage_options, "skip_instance_cache": True})
    assert other.root.fs is not store.root.fs  # its own client and listing cache, like another process
    second = publish(other, make_table(3000, salt="y"))
    table = make_table(10)
    other.publish("orders", PARTITION, table.schema, table.to_batches(), manifest_fields())

    assert store.assets() == [ASSET, "orders"]
    assert [m.version for m in store.versions(ASSET, PARTITION)] == [first.version, second.version]
    assert store.latest(ASSET, PARTITION).version == second.version


def test_a_backend_without_conditional_create_is_refused() -> None:
    class NoConditionalCreate:
        protocol = ("ftp",)

    with pytest.raises(backends.UnsupportedBackend, match="conditional create"):
        backends.create_exclusive(NoConditionalCreate(), "x/manifest.json", b"{}")


def test_memory_filesystem_publishes_write_once() -> None:
    store = SnapshotStore(f"memory://sp-{uuid.uuid4().hex[:8]}", settings=SMALL)
    first, again = publish(store, make_table(5000)), publish(store, make_table(5000))
    assert (first.created, again.created, again.version) == (True, False, first.version)
    assert store.read_table(ASSET, PARTITION).num_rows == 5000
    assert store.root.fs.find(f"{store.root.path}/.staging") == []


def test_a_missing_upload_folder_fails_in_one_line_naming_it(tmp_path) -> None:
    from snapshot_platform.store import StorageWriteError

    missing = tmp_path / "no-such-folder"
    store = SnapshotStore(f"memory://sp-{uuid.uuid4().hex[:8]}", settings=SMALL, upload_tmp_dir=str(missing))
    with pytest.raises(StorageWriteError) as caught:
        publish(store, make_table(100))
    message = str(caught.value)
    assert message.startswith("No such file or directory (ENOENT) writing ") and "\n" not in message, message
    assert f" writing {missing}/snapshot-part-*.parquet (part-00000.parquet for memory://" in message, message
    assert store.root.fs.find(store.root.path) == []


# ------------------------------------------------------------------ through Dagster


def test_materialize_a_snapshot_asset_on_object_storage(peer, prefix, platform_env, tmp_path, monkeypatch):
    """SNAPSHOT_PLATFORM_STORAGE_URL on the backend; the backend's credentials only in the environment."""
    from dagster import AssetKey, DagsterInstance, materialize

    from snapshot_platform.catalog import DEMO_CATALOG, load_catalog
    from snapshot_platform.orchestration.definitions import build_assets, build_resources
    from snapshot_platform.demo import source_db

    if peer.name == "s3":  # no storage_options on this path: the endpoint comes from the environment too
        monkeypatch.setenv("AWS_ENDPOINT_URL", peer.env["SP_TEST_ENDPOINT"])
    url = peer.url(prefix)
    monkeypatch.setenv("SNAPSHOT_PLATFORM_STORAGE_URL", url)
    db = tmp_path / "production.sqlite"
    source_db.create(db)
    monkeypatch.setenv("SNAPSHOT_PLATFORM_DEMO_DB", str(db))
    key = AssetKey(["snapshots", "customer_data"])

    def run() -> Any:
        result = materialize(
            build_assets(load_catalog(DEMO_CATALOG)),
            selection=[key],
            partition_key="2024-01-03",
            resources=build_resources(),
            instance=instance,
        )
        assert result.success
        [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
        return result, event.step_materialization_data.materialization

    with DagsterInstance.ephemeral() as instance:
        result, materialization = run()
        meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        version = meta["snapshot/version"]
        assert meta["dagster/uri"] == f"{url}/snapshots/customer_data/2024-01-03/{version}"
        assert meta["snapshot/new_version"] is True

        store = SnapshotStore(url)  # credentials and endpoint from the environment
        manifest = store.read_manifest("customer_data", "2024-01-03", version)
        table = store.read_table("customer_data", "2024-01-03", version)
        assert table.num_rows == meta["dagster/row_count"] == manifest.row_count > 100
        assert store.verify_version(manifest) == []

        folder = f"{prefix}/snapshots/customer_data/2024-01-03/{version}"
        raw_manifest = peer.get(f"{folder}/manifest.json").decode()
        events = "\n".join(str(e) for e in result.all_events)
        for secret in (*peer.secrets, "AccountKey", "SharedAccessSignature"):
            assert secret not in raw_manifest, secret
            assert secret not in repr(materialization.metadata), secret
            assert secret not in events, secret

        again, materialization = run()  # unchanged data: the same version, recorded again
        meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        assert (meta["snapshot/version"], meta["snapshot/new_version"]) == (version, False)
    assert not [k for k in peer.keys(prefix + "/") if "/.staging/" in k]
