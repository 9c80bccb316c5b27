"""What publishing needs from an object store, spelled out per fsspec backend.

On local disk the store publishes with hard links (``publish.py``). On object stores a version is
published by uploading its parts that are not stored yet (:func:`upload_exclusive`, create-if-absent,
store/upload.py), then creating ``manifest.json`` *only if no object exists under that key*: the one
write that makes the version visible, and the one that decides a race between two publishers of the
same version. Every backend spells that conditional create differently:

===============  ==========  ===================================================  ==========================
protocol         library     exclusive create                                     the loser gets
===============  ==========  ===================================================  ==========================
``s3``, ``s3a``  s3fs        PutObject with ``If-None-Match: *``                  412 PreconditionFailed
``gs``, ``gcs``  gcsfs       upload with ``ifGenerationMatch=0``                  412 conditionNotMet
``az``,          adlfs       Put Blob with ``If-None-Match: *``                   409 BlobAlreadyExists
``abfs[s]``                  (azure-storage-blob ``upload_blob(overwrite=False)``) (412 ConditionNotMet)
``memory``       fsspec      check and write under a process-wide lock            (one process only)
===============  ==========  ===================================================  ==========================

S3 answers 409 ConditionalRequestConflict while a competing conditional write to the same key is in
flight; that is retried, and the retry then gets 412. Any other protocol is refused: a store that
cannot create the manifest exclusively cannot keep versions write-once (docs/architecture.md, "The publish protocol").

Copies (retention moving a part aside and back) are complete when :func:`copy_object` returns: S3
CopyObject and GCS rewrite (looped until done) are synchronous already; an Azure Copy Blob may be
accepted as ``pending``, so it is polled to ``success``. Deleting the source while a copy is pending
would break the copy.

Everything here takes the fsspec filesystem and a protocol-less path (``bucket/key``), as fsspec does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

logger = logging.getLogger(__name__)

S3 = "s3"
GCS = "gcs"
AZURE = "az"
MEMORY = "memory"

_ALIASES = {
    "s3": S3, "s3a": S3,
    "gs": GCS, "gcs": GCS,
    "az": AZURE, "abfs": AZURE, "abfss": AZURE,
    "memory": MEMORY,
}

_S3_CONFLICT_RETRIES = 6
_AZURE_COPY_TIMEOUT_S = 3600.0
_memory_lock = threading.Lock()


class UnsupportedBackend(ValueError):
    """The filesystem has no conditional create the store knows of, so it cannot publish there."""


def backend_of(fs: Any) -> str:
    """The canonical backend name of an fsspec filesystem: ``s3``, ``gcs``, ``az`` or ``memory``."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    for p in protocols:
        if p in _ALIASES:
            return _ALIASES[p]
    raise UnsupportedBackend(
        f"cannot publish snapshots with {type(fs).__name__} (protocol {'/'.join(protocols)}): "
        "the store needs a conditional create for manifest.json; supported are local paths, "
        "s3:// (s3fs), gs:// (gcsfs), az:// or abfs:// (adlfs) and memory://"
    )


# ------------------------------------------------------------------ exclusive create


def create_exclusive(fs: Any, path: str, data: bytes, content_type: str = "application/json") -> bool:
    """Create the object ``path`` holding ``data`` if no object exists there.

    True: this call created it. False: an object already existed (or a competing writer created it
    first); it is left as it was. Any other failure raises.
    """
    backend = backend_of(fs)
    if backend == S3:
        created = _s3_create(fs, path, data, content_type)
    elif backend == GCS:
        created = _gcs_create(fs, path, data, content_type)
    elif backend == AZURE:
        created = _azure_create(fs, path, data)
    else:
        created = _memory_create(fs, path, data)
    fs.invalidate_cache(path)
    return created


def _client_error(exc: BaseException) -> tuple[str | None, int | None]:
    """(error code, HTTP status) of the botocore ClientError behind an s3fs exception, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return response["Error"].get("Code"), status
        seen = seen.__cause__ or seen.__context__
    return None, None


def _s3_create(fs: Any, path: str, data: bytes, content_type: str) -> bool:
    bucket, key, _ = fs.split_path(path)
    return _s3_exclusive(path, lambda: fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                                   ContentType=content_type, IfNoneMatch="*"))


def _s3_exclusive(path: str, write: Callable[[], Any]) -> bool:
    """Run ``write`` (a request carrying ``If-None-Match: *``): True if it created the object, False
    if one existed; 409 ConditionalRequestConflict (a competing write in flight) is retried."""
    for attempt in range(_S3_CONFLICT_RETRIES):
        try:
            # s3fs turns a 412 whose Condition is If-None-Match into FileExistsError; other
            # S3-compatible servers may omit the Condition, hence the explicit check below.
            write()
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            code, status = _client_error(exc)
            if code == "PreconditionFailed" or status == 412:
                return False
            if code == "ConditionalRequestConflict" or status == 409:
                time.sleep(0.05 * 2**attempt)
                continue
            raise
    raise OSError(f"s3://{path}: conditional create still conflicting after {_S3_CONFLICT_RETRIES} tries")


def _gcs_create(fs: Any, path: str, data: bytes, content_type: str) -> bool:
    # gcsfs sends ifGenerationMatch=0 for mode="create" and raises FileExistsError on 412.
    try:
        fs.pipe_file(path, data, mode="create", content_type=content_type)
        return True
    except FileExistsError:
        return False


def _azure_create(fs: Any, path: str, data: bytes) -> bool:
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    # adlfs maps mode="create" to upload_blob(overwrite=False): the SDK sends If-None-Match: *.
    try:
        fs.pipe_file(path, data, mode="create")
        return True
    except (FileExistsError, ResourceExistsError, ResourceModifiedError):
        return False


def _memory_create(fs: Any, path: str, data: bytes) -> bool:
    with _memory_lock:
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True


# ------------------------------------------------------------------ upload


def upload_exclusive(fs: Any, lpath: str, path: str, overwrite: bool = False) -> bool:
    """Upload the local file ``lpath`` to the object ``path`` if no object exists there
    (``overwrite``: replace whatever is there). True: this call created it; False: an object was
    there already, left as it was.

    The object appears whole or not at all on every backend: one PUT for a small file; for a large
    one an S3 multipart upload (in blocks of the filesystem's ``default_block_size``, ``If-None-Match: *``
    on CompleteMultipartUpload), a GCS resumable upload (``ifGenerationMatch=0``; the object exists
    once the last chunk is in) or Azure staged blocks (``If-None-Match: *`` on Put Block List) exist
    only once their last request completes. An interrupted upload leaves no object (S3 may keep an
    incomplete multipart upload: docs/storage.md has the lifecycle rule that aborts them).
    """
    backend = backend_of(fs)
    mode = "overwrite" if overwrite else "create"
    try:
        if backend == S3:
            chunk = getattr(fs, "default_block_size", None)
            upload = lambda: fs.put_file(lpath, path, mode=mode, chunksize=chunk)  # noqa: E731
            if overwrite:
                upload()
                return True
            return _s3_exclusive(path, upload)
        if backend == MEMORY:
            with _memory_lock:
                if not overwrite and fs.exists(path):
                    return False
                fs.put_file(lpath, path)
                return True
        refused: tuple[type[BaseException], ...] = (FileExistsError,)  # gcsfs: on 412; adlfs: on 409
        if backend == AZURE:
            from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

            refused += (ResourceExistsError, ResourceModifiedError)  # 412 comes through as the latter
        try:
            fs.put_file(lpath, path, mode=mode)
            return True
        except refused:
            if overwrite:  # not a lost race: the store refused to replace the object (a lease, a lock)
                raise
            return False
    finally:
        fs.invalidate_cache(path)


# ------------------------------------------------------------------ copy, remove


def copy_object(fs: Any, src: str, dst: str, expected_bytes: int | None = None) -> None:
    """Server-side copy of one object, complete when this returns (and of ``expected_bytes``)."""
    if backend_of(fs) == AZURE:
        _run(fs, _azure_copy, fs, src, dst)
    else:
        fs.copy(src, dst)
    fs.invalidate_cache(dst)
    if expected_bytes is not None:
        size = fs.info(dst)["size"]
        if size != expected_bytes:
            raise OSError(f"copy of {src} to {dst} has {size} bytes, expected {expected_bytes}")


async def _azure_copy(fs: Any, src: str, dst: str) -> None:
    src_container, src_blob, _ = fs.split_path(src)
    dst_container, dst_blob, _ = fs.split_path(dst)
    source = fs.service_client.get_blob_client(container=src_container, blob=src_blob)
    async with fs.service_client.get_blob_client(container=dst_container, blob=dst_blob) as target:
        props = await target.start_copy_from_url(source.url)
        status = props.get("copy_status")
        deadline = time.monotonic() + _AZURE_COPY_TIMEOUT_S
        delay = 0.05
        while status == "pending":
            if time.monotonic() > deadline:
                await target.abort_copy(props["copy_id"])
                raise OSError(f"copy of {src} to {dst} still pending after {_AZURE_COPY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            status = (await target.get_blob_properties()).copy.status
        if status != "success":
            raise OSError(f"copy of {src} to {dst} ended {status!r}")


def remove_tree(fs: Any, path: str) -> None:
    """Delete every object under ``path``; nothing there is fine. Errors are logged, not raised."""
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
    except Exception as exc:  # cleanup must never hide the error that brought us here
        logger.warning("could not remove %s: %s", path, exc)
    finally:
        fs.invalidate_cache(path)


def _run(fs: Any, func: Any, *args: Any) -> Any:
    from fsspec.asyn import sync

    return sync(fs.loop, func, *args)
