"""``manifest.json``: the record of one published snapshot version, and the source of truth.

The manifest is written last and once; a version folder without one is not a snapshot. Its fields
are a contract (docs/architecture.md lists them): other tools read them without this package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import pyarrow as pa

# 1: the first layout. 2: each schema entry may carry ``source_type`` (the column's database type),
# and types without an exact Arrow equivalent are kept as the server's canonical text or refused
# (docs/sources.md has each engine's table). 3: the parts are shared, content-addressed files
# under <root>/parts/ (part_path), each ``files[].path`` relative to the storage root; formats 1 and 2
# keep their parts in the version folder. Every format stays readable.
FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
SHARED_PARTS_FORMAT = 3  # from this format on, files[].path names a shared part (part_path)
MANIFEST_NAME = "manifest.json"
PARTS_DIR = "parts"

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


def part_path(sha256: str) -> str:
    """Where a shared part lives, relative to the storage root: ``parts/<sha256[:2]>/<sha256>.parquet``.

    One file per content: every version (of any snapshot or partition) whose part has these bytes
    references this one file (format 3 manifests)."""
    return f"{PARTS_DIR}/{sha256[:2]}/{sha256}.parquet"


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
        if p in seen and manifest["format_version"] < SHARED_PARTS_FORMAT:
            # format 3 may list one shared part twice: two runs of identical rows give identical parts
            raise ManifestError(f"{where}: files[{i}].path {p!r} is listed twice")
        seen.add(p)
        if not (isinstance(f["sha256"], str) and len(f["sha256"]) == 64
                and all(ch in "0123456789abcdef" for ch in f["sha256"])):
            raise ManifestError(f"{where}: files[{i}].sha256 must be 64 lowercase hex digits")
        if manifest["format_version"] >= SHARED_PARTS_FORMAT and p != part_path(f["sha256"]):
            # a shared part is named by its content: a manifest cannot point at any other file
            raise ManifestError(f"{where}: files[{i}].path {p!r} must be {part_path(f['sha256'])!r} "
                                f"(format {manifest['format_version']}: the shared part of its sha256)")
        for k in ("bytes", "rows"):
            if not _is_count(f[k]):
                raise ManifestError(f"{where}: files[{i}].{k} must be a non-negative integer")
    if sum(f["rows"] for f in files) != manifest["row_count"]:
        raise ManifestError(f"{where}: row_count does not equal the sum of the files' rows")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_location(manifest: "Manifest", asset: str, partition: str, version: str, where: str) -> None:
    """A manifest must describe the folder it sits in: ``<asset>/<partition>/<version>/``.

    A manifest copied into another partition's (or version's) folder would otherwise pass its files
    off as that partition's data."""
    found = (manifest.asset, manifest.partition, manifest.version)
    if found != (asset, partition, version):
        raise ManifestError(
            f"{where}: the manifest describes {found[0]}/{found[1]}/{found[2]} but sits in "
            f"{asset}/{partition}/{version}; a manifest is only valid in its own version folder"
        )


def schema_without_source_types(schema: "tuple[SchemaColumn, ...]") -> list[dict[str, Any]]:
    """Schema entries as :func:`version_id` digests them (``source_type`` left out)."""
    return [{k: v for k, v in c.as_dict().items() if k != "source_type"} for c in schema]


# ---------------------------------------------------------------- the typed manifest
#
# One reader (:meth:`Manifest.from_json`) and one writer (:meth:`Manifest.to_json`). Each object
# remembers the keys it was read with, in their order, and any key this release does not know
# (``extra``): writing it again gives the same bytes, and nothing on disk is lost by a read.


@dataclass(frozen=True, kw_only=True)
class JsonObject:
    """A JSON object with typed fields; ``extra`` holds the keys this release does not know."""

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """Keys found on disk that no field names, kept as read (written back unchanged)."""
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The keys in the order they were read (empty: the order this release writes)."""

    _FIELDS: ClassVar[tuple[str, ...]] = ()  # known JSON keys, in the order this release writes them
    _OPTIONAL: ClassVar[tuple[str, ...]] = ()  # known keys left out when their value is None and no order says otherwise

    def _value(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (nested objects as dicts), keys in the order they were read."""
        order = self.key_order or tuple(
            [k for k in self._FIELDS if not (k in self._OPTIONAL and getattr(self, k) is None)] + list(self.extra))
        return {k: (self._value(k) if k in self._FIELDS else self.extra[k]) for k in order}

    @classmethod
    def _split(cls, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        known = {k: d.get(k) for k in cls._FIELDS}
        extra = {k: v for k, v in d.items() if k not in cls._FIELDS}
        return known, {"extra": extra, "key_order": tuple(d)}


@dataclass(frozen=True, kw_only=True)
class FileEntry(JsonObject):
    """One Parquet part of a version (``files[]``)."""

    path: str
    """Format 3: relative to the storage root, the shared part ``parts/<sha256[:2]>/<sha256>.parquet``
    (:func:`part_path`); formats 1 and 2: relative to the version folder, e.g. ``part-00000.parquet``."""
    sha256: str
    """64 lowercase hex digits of the file's bytes."""
    bytes: int
    """Its size."""
    rows: int
    """Rows in it (its Parquet footer must say the same)."""

    _FIELDS = ("path", "sha256", "bytes", "rows")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FileEntry":
        known, rest = cls._split(d)
        return cls(**known, **rest)


@dataclass(frozen=True, kw_only=True)
class SchemaColumn(JsonObject):
    """One column of the version's schema (``schema[]``), in column order."""

    name: str
    type: str
    """The Arrow type as text, e.g. ``decimal128(15, 2)``."""
    nullable: bool | None = None
    """None only in a hand-made manifest that left it out."""
    source_type: str | None = None
    """Format 2: the column's database type (``inet``, ``money``, ...), where recorded."""

    _FIELDS = ("name", "type", "nullable", "source_type")
    _OPTIONAL = ("nullable", "source_type")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SchemaColumn":
        known, rest = cls._split(d)
        return cls(**known, **rest)


@dataclass(frozen=True, kw_only=True)
class CheckOutcome(JsonObject):
    """The recorded outcome of one integrity check (``checks[name]``; checks.py computes them)."""

    passed: bool
    blocking: bool | None = None
    """A failed blocking check makes the version untrainable (gate.py)."""
    severity: str | None = None
    """``ERROR`` for a blocking check, ``WARN`` otherwise."""
    details: Mapping[str, Any] | None = None
    """What was counted (offending rows, examples, the tolerance ...), as recorded."""

    _FIELDS = ("passed", "blocking", "severity", "details")
    _OPTIONAL = ("blocking", "severity", "details")

    @classmethod
    def of(cls, passed: bool, blocking: bool, details: Mapping[str, Any]) -> "CheckOutcome":
        """A new outcome: severity follows from ``blocking``."""
        return cls(passed=bool(passed), blocking=blocking, severity="ERROR" if blocking else "WARN",
                   details=details)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CheckOutcome":
        known, rest = cls._split(d)
        return cls(**known, **rest)


@dataclass(frozen=True, kw_only=True)
class Manifest(JsonObject):
    """``manifest.json``: the record of one published version (docs/architecture.md, "The manifest").

    Read with :meth:`from_json` (validated: a :class:`ManifestError` names the file and the field),
    written with :meth:`to_json`. Formats 1 to 3 are read; keys this release does not know are kept.
    """

    format_version: int
    """``3`` is written; ``1``, ``2`` and ``3`` are read (format 2 adds ``source_type`` to schema
    entries; format 3 keeps the parts as shared files under ``<root>/parts/``)."""
    asset: str
    """The snapshot's name: the folder ``<asset>/<partition>/<version>/`` the manifest must sit in."""
    partition: str
    """The partition key."""
    version: str
    """The version id: 20 hex digits digesting the schema and the parts (:func:`version_id`)."""
    created_at: str
    """UTC ISO time of the publish."""
    row_count: int
    """Rows in the version; the sum of ``files[].rows``."""
    files: tuple[FileEntry, ...]
    """The Parquet parts, in order."""
    schema: tuple[SchemaColumn, ...]
    """The columns, in order."""
    window: Mapping[str, Any] | None = None
    """``start``, ``end`` (ISO text) of the partition's half-open window."""
    query: str | None = None
    """The query as run."""
    query_sha256: str | None = None
    params: Mapping[str, Any] | None = None
    """The bound window parameters."""
    key: tuple[str, ...] | None = None
    """The catalog key the rows are ordered by (optional)."""
    source: Mapping[str, Any] | None = None
    """``name``, ``kind``, ``host``, ``database`` (and the engine's own facts): never a secret."""
    source_state: Mapping[str, Any] | None = None
    """The engine's marker of the data's point in time, where it has one."""
    dagster_run_id: str | None = None
    """None outside Dagster."""
    code_version: str | None = None
    library_versions: Mapping[str, str] | None = None
    writer: Mapping[str, Any] | None = None
    """``format``, ``compression``, ``compression_level``, ``row_group_rows``, ``part_rows``; since
    format 3 also how parts were cut: ``part_boundaries`` (``key-hash-1``), ``part_min_rows``,
    ``part_boundary_modulus`` (store/boundaries.py)."""
    checks: Mapping[str, CheckOutcome] | None = None
    """Check name -> its recorded outcome (absent in manifests written before the checks were)."""
    as_of: str | None = None
    """``mode: as_of`` snapshots only: the instant whose state the version holds (the partition's
    end, UTC ISO). Absent for window snapshots."""
    read_at: str | None = None
    """``mode: as_of`` only: the database's own time at the read (its consistent session's start;
    the local clock where the engine has none, e.g. SQLite), UTC ISO."""
    late: bool | None = None
    """``mode: as_of`` only: true when ``read_at`` was more than ``max_lag`` after ``as_of`` and the
    run accepted the late read explicitly (``--accept-late``, ``accept_late: true``)."""
    source_fingerprint: Mapping[str, Any] | None = None
    """Snapshots with a ``change_probe`` only: the probe's one row (column -> value), read in the
    same consistent session as the data. A later fingerprint of the same version is a sidecar in
    ``fingerprints/`` (store/fingerprints.py), never a change to this file."""

    _FIELDS = ("window", "query", "query_sha256", "params", "key", "source", "source_state", "dagster_run_id",
               "code_version", "library_versions", "format_version", "asset", "partition", "version",
               "created_at", "row_count", "files", "schema", "writer", "checks", "as_of", "read_at", "late", "source_fingerprint")
    _OPTIONAL = ("key", "writer", "checks", "as_of", "read_at", "late", "source_fingerprint")

    def _value(self, name: str) -> Any:
        v = getattr(self, name)
        if name in ("files", "schema"):
            return [e.as_dict() for e in v]
        if name == "checks" and v is not None:
            return {n: c.as_dict() for n, c in v.items()}
        if name == "key" and v is not None:
            return list(v)
        return v

    @property
    def shared_parts(self) -> bool:
        """Its parts are shared files under ``<root>/parts/`` (format 3), not in its version folder."""
        return self.format_version >= SHARED_PARTS_FORMAT

    @property
    def where(self) -> str:
        """``<asset>/<partition> version <version>``, as error messages name a version."""
        return f"{self.asset}/{self.partition} version {self.version}"

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "Manifest":
        """The one reader: parse and validate ``raw`` (the bytes of ``where``)."""
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{where}: not valid JSON: {exc}") from None
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Manifest":
        """Validate a JSON-shaped manifest (:func:`validate`) and type it; check outcomes may be
        given as :class:`CheckOutcome` already."""
        if isinstance(d, dict) and isinstance(d.get("checks"), dict):
            d = {**d, "checks": {n: c.as_dict() if isinstance(c, CheckOutcome) else c
                                 for n, c in d["checks"].items()}}
        validate(d, where)
        known, rest = cls._split(d)
        known["files"] = tuple(FileEntry.from_dict(f) for f in d["files"])
        known["schema"] = tuple(SchemaColumn.from_dict(c) for c in d["schema"])
        if known["key"] is not None:
            known["key"] = tuple(known["key"])
        if known["checks"] is not None:
            known["checks"] = {n: CheckOutcome.from_dict(c) for n, c in d["checks"].items()}
        return cls(**known, **rest)

    def to_json(self) -> bytes:
        """The one writer: the manifest's bytes (indented JSON, keys in the order read or published)."""
        d = self.as_dict()
        validate(d, where="<new manifest>")
        return (json.dumps(d, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8")
