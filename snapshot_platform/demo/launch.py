"""Run a named job of the project's code location for one partition, in this process, as the UI would.

``dagster.materialize`` (and ``dagster asset materialize``) record every run as
``__ephemeral_asset_job__`` / ``__ASSET_JOB`` without a code location, so the UI cannot re-execute
them and snapshot runs look like model runs. Here the run is created from the code location
``snapshot_platform`` (the name in ``workspace.yaml`` and ``[tool.dg.project]``), loaded from the
module ``snapshot_platform.definitions``, for a named job (``snapshots_daily``, ``models_churn``):
the run records the job's name and its code location origin, so ``dg dev`` / ``dagster dev`` offer
'Re-execute' on it. It then runs in this process (``execute_run``, what ``dagster api execute_run``
does in a launched run's process), so the demo needs no daemon and no code server.

Dagster has no public API for "create a run of a code location's job and execute it here": this
follows ``dagster job launch`` (``dagster/_cli/job.py``, ``_create_run``) and uses Dagster internals,
pinned with the rest of Dagster (constraints.txt). A test (integration/test_demo_runs.py) checks the
runs it records.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from dagster import DagsterInstance
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.hosted_user_process import recon_job_from_origin

LOCATION_NAME = "snapshot_platform"  # workspace.yaml, [tool.dg.project] code_location_name
DEFINITIONS_MODULE = "snapshot_platform.definitions"


class CodeLocationRunner:
    """The code location, loaded once; :meth:`run` creates and executes one run of a named job."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE,
                                 working_directory=os.getcwd()),
            location_name=LOCATION_NAME)
        self.location = origin.create_location(instance)
        (self.repository,) = self.location.get_repositories().values()

    def run(self, job_name: str, partition_key: str, tags: Mapping[str, str] | None = None,
            run_config: Mapping[str, Any] | None = None) -> Any:
        """Create a run of ``job_name`` for ``partition_key`` and execute it; the result
        (``JobExecutionResult``: ``success``, ``run_id``, ``all_events``)."""
        selector = JobSubsetSelector(location_name=self.location.name, repository_name=self.repository.name,
                                     job_name=job_name, op_selection=None)
        remote_job = self.location.get_job(selector)
        config = dict(run_config or {})
        plan = self.location.get_execution_plan(remote_job, config, step_keys_to_execute=None,
                                                known_state=None, instance=self.instance)
        snapshot = plan.execution_plan_snapshot
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=config,
            resolved_op_selection=remote_job.resolved_op_selection,
            step_keys_to_execute=snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**remote_job.tags, **(tags or {}), PARTITION_NAME_TAG: partition_key},
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self.repository.asset_graph,
        )
        return execute_run(recon_job_from_origin(run.job_code_origin), run, self.instance)
