"""All Dagster wiring, on top of the plain libraries (catalog, sources, store, capture, checks, training).

``definitions.py`` builds the Definitions (assets, schedules, resources, the freshness policy);
``snapshot_assets.py`` and ``model_assets.py`` the assets; ``resources.py`` the store, MLflow and
source resources; ``io_manager.py`` the IO manager; ``versions.py`` decides which version a
downstream asset reads; ``pools.py`` the source pools and their limits; ``partitions.py`` the
partitions, windows and freshness; ``metadata.py`` the metadata keys and builders. Nothing below
this package imports it.
"""
