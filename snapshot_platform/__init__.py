"""snapshot_platform: pinned, immutable, verifiable training-data snapshots of production databases."""

__version__ = "0.1.0"
