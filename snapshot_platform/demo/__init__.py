"""The embedded demo: a generated SQLite source, local storage, local MLflow."""
