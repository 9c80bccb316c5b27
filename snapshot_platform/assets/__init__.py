"""The Dagster layer: assets built from the catalog."""
