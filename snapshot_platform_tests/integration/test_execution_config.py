"""The Celery executor's settings: what the code location sends with a step and what the workers run
with (deploy/celery.yaml) agree, and they keep a killed worker's step (acks late, reject on worker
lost). test_cluster.py shows the redelivery end to end; this catches a drift in seconds."""

from __future__ import annotations

import pytest
import yaml

from snapshot_platform_tests.conftest import REPO_ROOT


def test_workers_and_executor_share_the_settings_that_keep_a_killed_workers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_celery.cli import get_validated_config

    from snapshot_platform.orchestration.execution import CELERY_SETTINGS, celery_executor_config, executor_from_environment

    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "pyamqp://guest:guest@127.0.0.1:5672/vhost")
    worker = get_validated_config(str(REPO_ROOT / "deploy" / "celery.yaml"))  # what `-y` gives a worker
    assert worker["broker"] == "pyamqp://guest:guest@127.0.0.1:5672/vhost"
    assert worker["config_source"] == celery_executor_config()["config_source"] == CELERY_SETTINGS
    assert CELERY_SETTINGS["task_acks_late"] is True and CELERY_SETTINGS["task_reject_on_worker_lost"] is True
    assert yaml.safe_load((REPO_ROOT / "deploy" / "celery.yaml").read_text())["execution"]["config"]["broker"] == {
        "env": "DAGSTER_CELERY_BROKER_URL"}  # the broker's password stays in the environment

    monkeypatch.setenv("SNAPSHOT_PLATFORM_EXECUTOR", "celery")
    assert executor_from_environment().name == "celery"
    monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL")
    with pytest.raises(ValueError, match="DAGSTER_CELERY_BROKER_URL"):
        executor_from_environment()
    monkeypatch.setenv("SNAPSHOT_PLATFORM_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="expected 'celery'"):
        executor_from_environment()
    monkeypatch.delenv("SNAPSHOT_PLATFORM_EXECUTOR")
    assert executor_from_environment() is None
