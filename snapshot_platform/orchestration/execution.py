"""Where steps execute: in the run's own process tree (Dagster's default), or on Celery workers.

``SNAPSHOT_PLATFORM_EXECUTOR=celery`` makes every job of the code location use dagster-celery's
``celery_executor``: each step (a snapshot partition, a model partition) is a Celery task that any
worker listening on the queue may take (``dagster-celery worker start -A dagster_celery.app -y
deploy/celery.yaml``; docs/deployment.md). The executor's settings come from the environment, by
reference (``{env: NAME}``), so a broker password never becomes part of a run's config:

``DAGSTER_CELERY_BROKER_URL`` names the broker (``pyamqp://user:password@rabbitmq:5672/vhost``).
Steps go to dagster-celery's queue ``dagster``; to keep deployments apart, give each its own
RabbitMQ virtual host (the last part of the URL).

Celery's defaults lose a task whose worker dies: the message is acknowledged when a worker receives
it, so a killed worker's step never finishes and its run stays STARTED. :data:`CELERY_SETTINGS`
acknowledges a task only after it ran and rejects it back to the queue when the worker is lost, so
the broker hands the step to another worker. Running a snapshot step twice is safe: the version id
is the content's digest and the manifest is created only if absent (docs/architecture.md).
"""

from __future__ import annotations

import os
from typing import Any

EXECUTOR_ENV = "SNAPSHOT_PLATFORM_EXECUTOR"
BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"

# Celery settings the executor and the workers must share (deploy/celery.yaml holds the same).
CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,  # acknowledge after the step ran, not on receipt
    "task_reject_on_worker_lost": True,  # a worker killed mid-step: the step goes back to the queue
    "worker_prefetch_multiplier": 1,  # a worker reserves no more steps than it runs
}


def celery_executor_config() -> dict[str, Any]:
    """The ``celery_executor`` config: the broker by environment reference, the shared settings."""
    return {"broker": {"env": BROKER_ENV}, "backend": "rpc://", "config_source": dict(CELERY_SETTINGS)}


def executor_from_environment() -> Any | None:
    """The executor named by ``SNAPSHOT_PLATFORM_EXECUTOR`` (``celery``), or None for Dagster's default."""
    kind = (os.environ.get(EXECUTOR_ENV) or "").strip().lower()
    if kind in ("", "default", "multiprocess"):
        return None
    if kind == "k8s":  # each step a Kubernetes job (the Helm chart's K8sRunLauncher; deploy/helm/values.yaml)
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ValueError(f"{EXECUTOR_ENV}=k8s needs dagster-k8s==0.29.27 in the image: {exc}") from None
        return k8s_job_executor
    if kind != "celery":
        raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected 'celery', 'k8s' or unset (Dagster's multiprocess executor)")
    if not os.environ.get(BROKER_ENV):
        raise ValueError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV} (the Celery broker URL)")
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_executor_config(), name="celery")
