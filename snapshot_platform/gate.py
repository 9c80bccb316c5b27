"""The training gate: a snapshot version whose blocking check failed is evidence, not training data.

A manifest records its checks under ``checks`` (check name → ``passed``, ``blocking``, ``severity``,
``details``). Training, inside and outside Dagster (``reproduce`` too), calls :func:`assert_trainable`
on every version it is about to use.
"""

from __future__ import annotations

from snapshot_platform.store.manifest import Manifest


class UntrainableSnapshot(RuntimeError):
    """A version failed a blocking check and no override reason was given."""


def blocking_failures(manifest: Manifest) -> list[str]:
    """Names of the blocking checks this version failed (empty when it may be trained on)."""
    checks = manifest.checks or {}
    return sorted(n for n, c in checks.items() if c.blocking and not c.passed)


def assert_trainable(manifest: Manifest, override_reason: str | None = None) -> list[str]:
    """Raise :class:`UntrainableSnapshot` unless every blocking check passed or an override reason is given.

    Returns the failed blocking checks that the override let through (to be logged with the reason).
    """
    failed = blocking_failures(manifest)
    if failed and not (override_reason and override_reason.strip()):
        raise UntrainableSnapshot(
            f"{manifest.where} failed blocking "
            f"checks {', '.join(failed)}; nothing trains on it unless the training config gives "
            "allow_failed_checks_reason"
        )
    return failed
