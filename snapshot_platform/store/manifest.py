"""``manifest.json``: the record of one published snapshot version, and the source of truth.

The manifest is written last and once; a version folder without one is not a snapshot. Its fields
are a contract (docs/architecture.md lists them): other tools read them without this package.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

# 1: the first layout. 2: each schema entry may carry ``source_type`` (the column's database type),
# and types without an exact Arrow equivalent are kept as the server's canonical text or refused
# (docs/sources.md has each engine's table). Format 1 manifests stay readable.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"

REQUIRED_FIELDS = (
    "format_version",
    "asset",
    "partition",
    "window",
    "version",
    "created_at",
    "row_count",
    "files",
    "schema",
    "query",
    "query_sha256",
    "params",
    "source",
    "source_state",
    "dagster_run_id",
    "code_version",
    "library_versions",
)


class ManifestError(ValueError):
    pass


def schema_to_json(schema: pa.Schema, source_types: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Column names and Arrow types, in order: ``[{"name": ..., "type": "decimal128(15, 2)", "nullable": true}]``.

    With ``source_types`` (column → the database's type name, e.g. ``inet``, ``money``), each entry
    also records ``source_type``, so that a reader can tell ``inet`` text from free text. The
    version id digests the entries without it (:func:`version_id`): the same bytes keep their id.
    """
    out = []
    for f in schema:
        entry: dict[str, Any] = {"name": f.name, "type": str(f.type), "nullable": f.nullable}
        if source_types and f.name in source_types:
            entry["source_type"] = source_types[f.name]
        out.append(entry)
    return out


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def version_id(schema: pa.Schema, file_hashes: list[str]) -> str:
    """The version id: a digest of the schema and of every part's bytes, in order.

    Parquet bytes are deterministic for the same rows in the same order, because the writer's
    settings (compression, row-group and part sizes) are fixed and recorded in the manifest and the
    row groups are cut at fixed row counts, whatever batch sizes the source produced.
    """
    h = hashlib.sha256()
    h.update(json.dumps(schema_to_json(schema), sort_keys=True).encode())
    for fh in file_hashes:
        h.update(bytes.fromhex(fh))
    return h.hexdigest()[:20]


def dumps(manifest: dict[str, Any]) -> bytes:
    validate(manifest, where="<new manifest>")
    return (json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")


def loads(raw: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON: {exc}") from None
    validate(manifest, where)
    return manifest


def validate(manifest: Any, where: str) -> None:
    """Refuse a manifest whose fields a reader relies on are missing or of the wrong kind.

    Every error is a :class:`ManifestError` naming ``where`` and the field, never a ``KeyError`` or
    ``TypeError`` from deeper down: one malformed manifest must not stop a listing of the others.
    """
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: a manifest must be a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise ManifestError(f"{where}: missing required fields: {', '.join(missing)}")
    if manifest["format_version"] not in READABLE_FORMAT_VERSIONS:
        raise ManifestError(
            f"{where}: format_version {manifest['format_version']!r} is not supported "
            f"(this release reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))})"
        )
    for name in ("asset", "partition", "version", "created_at"):
        if not isinstance(manifest[name], str) or not manifest[name]:
            raise ManifestError(f"{where}: field {name!r} must be a non-empty string")
    if not _is_count(manifest["row_count"]):
        raise ManifestError(f"{where}: field 'row_count' must be a non-negative integer")
    schema = manifest["schema"]
    if not isinstance(schema, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("type"), str) for c in schema
    ):
        raise ManifestError(f"{where}: field 'schema' must be a list of {{name, type}} entries")
    key = manifest.get("key")
    if key is not None and not (isinstance(key, list) and all(isinstance(k, str) for k in key)):
        raise ManifestError(f"{where}: field 'key' must be a list of column names")
    checks = manifest.get("checks")
    if checks is not None and not (
        isinstance(checks, dict) and all(isinstance(c, dict) and "passed" in c for c in checks.values())
    ):
        raise ManifestError(f"{where}: field 'checks' must map check names to outcomes with 'passed'")
    files = manifest["files"]
    if not isinstance(files, list):
        raise ManifestError(f"{where}: field 'files' must be a list")
    seen = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise ManifestError(f"{where}: files[{i}] must be an object")
        for k in ("path", "sha256", "bytes", "rows"):
            if k not in f:
                raise ManifestError(f"{where}: files[{i}] lacks '{k}'")
        p = f["path"]
        if (not isinstance(p, str) or not p or p.startswith("/") or "\\" in p
                or any(c in ("", ".", "..") for c in p.split("/")) or p == MANIFEST_NAME):
            raise ManifestError(f"{where}: files[{i}].path {p!r} must be a plain relative path")
        if p in seen:
            raise ManifestError(f"{where}: files[{i}].path {p!r} is listed twice")
        seen.add(p)
        if not (isinstance(f["sha256"], str) and len(f["sha256"]) == 64
                and all(ch in "0123456789abcdef" for ch in f["sha256"])):
            raise ManifestError(f"{where}: files[{i}].sha256 must be 64 lowercase hex digits")
        for k in ("bytes", "rows"):
            if not _is_count(f[k]):
                raise ManifestError(f"{where}: files[{i}].{k} must be a non-negative integer")
    if sum(f["rows"] for f in files) != manifest["row_count"]:
        raise ManifestError(f"{where}: row_count does not equal the sum of the files' rows")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_location(manifest: dict[str, Any], asset: str, partition: str, version: str, where: str) -> None:
    """A manifest must describe the folder it sits in: ``<asset>/<partition>/<version>/``.

    A manifest copied into another partition's (or version's) folder would otherwise pass its files
    off as that partition's data."""
    found = (manifest["asset"], manifest["partition"], manifest["version"])
    if found != (asset, partition, version):
        raise ManifestError(
            f"{where}: the manifest describes {found[0]}/{found[1]}/{found[2]} but sits in "
            f"{asset}/{partition}/{version}; a manifest is only valid in its own version folder"
        )


def schema_without_source_types(schema_json: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema entries as :func:`version_id` digests them (``source_type`` left out)."""
    return [{k: v for k, v in c.items() if k != "source_type"} for c in schema_json]
