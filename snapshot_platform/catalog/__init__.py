"""The catalog (``snapshots.yaml``): its typed specs and how it is loaded. No Dagster here.

- :mod:`~snapshot_platform.catalog.specs`: snapshot and model entries (the source entries' specs live
  with their engines in :mod:`snapshot_platform.sources`, whose registry makes the ``SourceSpec`` union);
- :mod:`~snapshot_platform.catalog.loading`: YAML, validation with errors naming the file, the entry and
  the field, and :class:`Catalog`.
"""

from snapshot_platform.catalog.loading import (
    CATALOG_ENV,
    DEMO_CATALOG,
    Catalog,
    CatalogError,
    catalog_path,
    load_catalog,
    load_yaml,
    parse_catalog,
)
from snapshot_platform.catalog.specs import (
    NAME_PATTERN,
    ChecksSpec,
    ColumnRules,
    DriftCheckSpec,
    EstimatorSpec,
    ModelSpec,
    PartitionsSpec,
    SnapshotSpec,
    SplitSpec,
    VolumeCheckSpec,
    query_parameter_problem,
)
from snapshot_platform.sources import SourceSpec

__all__ = [
    "CATALOG_ENV", "DEMO_CATALOG", "NAME_PATTERN", "Catalog", "CatalogError", "ChecksSpec", "ColumnRules",
    "DriftCheckSpec", "EstimatorSpec", "ModelSpec", "PartitionsSpec", "SnapshotSpec", "SourceSpec", "SplitSpec", "VolumeCheckSpec",
    "catalog_path", "load_catalog", "load_yaml", "parse_catalog", "query_parameter_problem",
]
