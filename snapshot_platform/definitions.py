"""The code location's entry point: ``defs``, built from the catalog by ``orchestration/definitions.py``.

Loaded by ``workspace.yaml``, ``dagster dev`` in the project root and
``dagster asset materialize -m snapshot_platform.definitions``.
"""

from snapshot_platform.orchestration.definitions import build_definitions

__all__ = ["build_definitions", "defs"]

defs = build_definitions()
