"""Training on pinned snapshot versions, with full lineage in MLflow.

A plain library, like ``store/``: no Dagster import. The Dagster asset ``models/<name>``
(``orchestration/model_assets.py``) and the CLI (``reproduce``, ``compare``) wire it.

- ``estimator``: a catalog estimator spec → a scikit-learn estimator, seeded for determinism
- ``split``: the deterministic train/test split by a stable hash of the key
- ``train``: load pinned versions (hash-verified), gate, split, fit, evaluate → :class:`TrainingResult`
- ``lock``: ``snapshot_lock.json``, the exact versions (and file hashes) a run trained on
- ``plots``: confusion matrix, residuals, feature importances (matplotlib, Agg)
- ``mlflow_logging``: one MLflow run per training, datasets, model, registry; reading runs back
- ``reproduce``: retrain from a run's lock and compare metrics
- ``compare``: two runs side by side: metrics, data, spec, and a verdict
- ``reports``: the typed reports of ``reproduce`` and ``compare`` (one JSON writer each)
"""
