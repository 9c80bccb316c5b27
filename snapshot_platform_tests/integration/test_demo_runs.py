"""The demo's Dagster runs (issue 14 §6): every run is a named job of the project's code location
(``snapshots_daily`` for snapshots, ``models_churn`` for the model), recorded with that code
location's origin, so the UI lists them by job and can re-execute them; the demo catalog's owners
and column descriptions reach the assets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from snapshot_platform.catalog import DEMO_CATALOG, load_catalog
from snapshot_platform.orchestration.definitions import build_definitions
from snapshot_platform_tests.integration.test_cli import COMMAND, clean_environ

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "sp_home"
    proc = subprocess.run([*COMMAND, "demo"], env=clean_environ(SNAPSHOT_PLATFORM_HOME=str(home)),
                          capture_output=True, text=True, timeout=600, cwd=home.parent)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    return home


def test_every_demo_run_is_a_named_job_of_the_code_location(demo_home: Path) -> None:
    (location,) = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    location_name = location["python_module"]["location_name"]
    jobs = {j.name for j in build_definitions(load_catalog(DEMO_CATALOG)).resolve_all_job_defs()}
    with DagsterInstance.from_config(str(demo_home / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert runs
        by_job: dict[str, int] = {}
        for run in runs:
            assert run.status == DagsterRunStatus.SUCCESS, run.run_id
            assert not run.job_name.startswith("__"), run.job_name  # not __ephemeral_asset_job__
            assert run.job_name in jobs
            origin = run.remote_job_origin  # what the UI's Re-execute looks up in the workspace
            assert origin is not None and origin.job_name == run.job_name
            assert origin.location_name == location_name
            assert run.tags["dagster/partition"].startswith("2024-01-0")
            by_job[run.job_name] = by_job.get(run.job_name, 0) + 1
    # three partitions, one unchanged re-run, three again after the source moved on; two trainings
    assert by_job == {"snapshots_daily": 7, "models_churn": 2}


def test_the_demo_snapshot_shows_owners_and_column_descriptions(demo_home: Path) -> None:
    catalog = load_catalog(DEMO_CATALOG)
    described = catalog.snapshots["customer_data"].columns
    defs = build_definitions(catalog)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert specs[AssetKey(["snapshots", "customer_data"])].owners
    assert specs[AssetKey(["models", "churn"])].owners
    with DagsterInstance.from_config(str(demo_home / "dagster_home")) as instance:
        event = instance.get_latest_materialization_event(AssetKey(["snapshots", "customer_data"]))
    schema = event.asset_materialization.metadata["dagster/column_schema"].value
    got = {c.name: c.description for c in schema.columns}
    assert set(got) == set(described) and got == described
