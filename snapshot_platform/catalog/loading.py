"""The catalog: ``snapshots.yaml`` parsed into validated, typed specs.

Everything a run will do is decided here, before any database is touched: unknown keys, a bad
cadence, a missing source, a query without its window parameters, a literal password. Each error
names the file, the entry and the field. Secrets appear in the catalog only as references
(``{env: NAME}``); they are resolved at connection time by the source, never stored in a spec's repr.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Annotated, Any, Iterator

import yaml
from pydantic import Field, ValidationError

from snapshot_platform.catalog.specs import (
    NAME_PATTERN,
    ModelSpec,
    SnapshotSpec,
    _Strict,
    query_parameter_problem,
)
from snapshot_platform.sources import REGISTRY, SNAPSHOT_TIME_KINDS, SOURCE_KINDS, SourceSpec
from snapshot_platform.sources.sql import SNAPSHOT_TIME_PARAM, find_placeholders

CATALOG_ENV = "SNAPSHOT_PLATFORM_CATALOG"
DEMO_CATALOG = Path(__file__).parent.parent / "demo" / "snapshots.yaml"


class CatalogError(ValueError):
    """A catalog that cannot be used. The message names the file, the entry and the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Catalog(_Strict):
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SourceSpec]
    snapshots: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SnapshotSpec]
    models: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ModelSpec] = {}
    path: str = Field(default="<memory>", exclude=True)

    def source_of(self, snapshot: str) -> tuple[str, Any]:
        spec = self.snapshots[snapshot]
        return spec.source, self.sources[spec.source]


# ---------------------------------------------------------------- loading


def _field_path(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('snapshots', 'x', 'partitions', 'cadence') -> ('snapshots.x', 'partitions.cadence')."""
    parts = [str(p) for p in loc]
    # discriminated unions put the tag into the location: sources.warehouse.postgres.url
    if len(parts) >= 3 and parts[0] == "sources" and parts[2] in SOURCE_KINDS:
        parts = parts[:2] + parts[3:]
    if parts and parts[0] in {"sources", "snapshots", "models"} and len(parts) >= 2:
        if parts[2:] == ["[key]"]:
            return f"{parts[0]}.{parts[1]}", "(the entry's name)"
        return f"{parts[0]}.{parts[1]}", ".".join(parts[2:]) or "(the entry)"
    return "(top level)", ".".join(parts) or "(document)"


def parse_catalog(data: Any, path: str = "<memory>") -> Catalog:
    """Validate a parsed YAML document; raise :class:`CatalogError` listing every problem."""
    if not isinstance(data, dict):
        raise CatalogError([f"{path}: (document): must be a mapping with 'sources' and 'snapshots'"])
    try:
        catalog = Catalog.model_validate({**data, "path": path})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            entry, field = _field_path(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field (a misspelling? unknown fields are errors, not ignored)"
            elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                field = "kind"
                msg = ("unknown kind; supported kinds: " if err["type"] == "union_tag_invalid"
                       else "missing; one of: ") + ", ".join(SOURCE_KINDS)
            problems.append(f"{path}: {entry}: field '{field}': {msg}")
        raise CatalogError(problems) from None
    problems = []
    for name, src in catalog.sources.items():
        why = REGISTRY[src.kind].source.serial_reason
        if src.parallelism > 1 and why:
            problems.append(f"{path}: sources.{name}: field 'parallelism': a {src.kind} source reads a partition "
                            f"over one connection: {why}")
    for name, snap in catalog.snapshots.items():
        if snap.source not in catalog.sources:
            known = ", ".join(sorted(catalog.sources)) or "none"
            problems.append(
                f"{path}: snapshots.{name}: field 'source': unknown source {snap.source!r} (known: {known})"
            )
            continue
        kind = catalog.sources[snap.source].kind
        backslash = REGISTRY[kind].backslash_escapes
        problem = query_parameter_problem(snap.query, backslash_escapes=backslash, mode=snap.mode)
        if snap.change_probe is not None:
            if not REGISTRY[kind].source.supports_probe:
                probing = ", ".join(k for k, e in REGISTRY.items() if e.source.supports_probe)
                problems.append(f"{path}: snapshots.{name}: field 'change_probe': not supported on a {kind} "
                                f"source (supported: {probing})")
            else:
                probe_problem = query_parameter_problem(snap.change_probe.query, backslash, mode=snap.mode)
                if probe_problem:
                    problems.append(f"{path}: snapshots.{name}: field 'change_probe.query': {probe_problem} "
                                    f"(read as {kind} SQL)")
        if problem:
            problems.append(f"{path}: snapshots.{name}: field 'query': {problem} (read as {kind} SQL)")
        elif SNAPSHOT_TIME_PARAM in snap.query and (  # a plain text test first, then the scan
                SNAPSHOT_TIME_PARAM in {p.name for p in find_placeholders(snap.query, backslash)}):
            if kind not in SNAPSHOT_TIME_KINDS:
                problems.append(
                    f"{path}: snapshots.{name}: field 'query': :{SNAPSHOT_TIME_PARAM} pins tables to the read's "
                    f"start on {', '.join(SNAPSHOT_TIME_KINDS)}; a {kind} source reads one consistent snapshot "
                    "without it"
                )
    for name, model in catalog.models.items():
        if model.snapshot not in catalog.snapshots:
            known = ", ".join(sorted(catalog.snapshots)) or "none"
            problems.append(
                f"{path}: models.{name}: field 'snapshot': unknown snapshot {model.snapshot!r} (known: {known})"
            )
    if problems:
        raise CatalogError(problems)
    return catalog


def catalog_path() -> Path:
    return Path(os.environ.get(CATALOG_ENV) or DEMO_CATALOG)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate the catalog at ``path`` (default: $SNAPSHOT_PLATFORM_CATALOG, else the demo)."""
    p = Path(path) if path is not None else catalog_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{p}: (file): cannot read the catalog: {exc.strerror}"]) from None
    try:
        data = load_yaml(text, str(p))
    except yaml.YAMLError as exc:
        raise CatalogError([f"{p}: (document): not valid YAML: {exc}"]) from None
    except RecursionError:
        raise CatalogError([f"{p}: (document): nested too deeply to be a catalog"]) from None
    return parse_catalog(data, str(p))


# libyaml's parser when PyYAML has it (several times faster on big catalogs), else the Python one
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# aliases (*name) may add at most this many nodes, or ten times the nodes written, whichever is more:
# a few anchors shared by many entries pass, a "billion laughs" alias bomb does not
ALIAS_EXPANSION_NODES = 10_000
ALIAS_EXPANSION_FACTOR = 10


def load_yaml(text: str, path: str = "<memory>") -> Any:
    """``yaml.safe_load(text)``, refusing a document whose aliases expand beyond the bound.

    The document is composed first (an alias is one shared node there, so composing a bomb is cheap),
    its expanded size computed, and only then turned into Python objects.
    """
    loader = _YamlLoader(text)
    with collector_paused():
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if "*" in text:  # only an alias can expand a document
                _check_alias_expansion(node, path)
            return loader.construct_document(node)
        finally:
            loader.dispose()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a document is composed and constructed (and
    while the Dagster definitions are built from it: orchestration/definitions.py).

    Composing allocates a node (and its marks) per scalar, all alive until the end: every full
    collection walks them all again, which made parsing superlinear (10,000 snapshots, 370,000
    nodes: about 6 s with the collector, under 1 s without). Nothing composed here is garbage
    until the document is built; the collector runs again, as it was, afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_alias_expansion(root: yaml.Node, path: str) -> None:
    size: dict[int, int] = {}  # node -> nodes it expands to (itself and everything under it)
    refs: dict[int, int] = {}  # node -> how many places refer to it (more than one: an alias)
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            state[key] = 2
            continue
        if key in state:
            continue
        state[key] = 1
        stack.append((node, True))
        for child in _children(node):
            refs[id(child)] = refs.get(id(child), 0) + 1
            if state.get(id(child)) == 1:
                raise CatalogError([f"{path}: (document): an alias refers to a node that contains it (recursive YAML)"])
            if id(child) not in state:
                stack.append((child, False))
    written, expanded = len(state), size[id(root)]
    limit = written + max(ALIAS_EXPANSION_NODES, ALIAS_EXPANSION_FACTOR * written)
    if expanded <= limit:
        return
    # name where it happens: follow the biggest expansion down to the first aliased node
    keys: list[str] = []
    node = root
    while _children(node):
        if isinstance(node, yaml.MappingNode):
            k, node = max(node.value, key=lambda kv: size[id(kv[1])])
            keys.append(str(k.value) if isinstance(k, yaml.ScalarNode) else "?")
        else:
            i, child = max(enumerate(node.value), key=lambda iv: size[id(iv[1])])
            if refs.get(id(child), 0) > 1:  # the list of aliases is the field to name
                break
            keys.append(str(i))
            node = child
        if refs.get(id(node), 0) > 1:
            break
    entry, field = _field_path(tuple(keys))
    raise CatalogError([
        f"{path}: {entry}: field '{field}': YAML aliases expand the catalog to {expanded:,} nodes from "
        f"{written:,} written (at most {limit:,}); write the values out instead of nesting aliases"
    ])
