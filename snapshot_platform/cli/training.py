"""The training-run commands: reproduce, compare (rendering in ``render.py``)."""

from __future__ import annotations

import sys

import click

from snapshot_platform.cli import render
from snapshot_platform.cli.common import EXIT_FAILED, fail, store_of, tracking, tracking_option


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@tracking_option
@click.option("--allow-failed-checks-reason", default=None,
              help="Retrain even on versions that failed a blocking check (the run's own recorded reason wins).")
@click.pass_context
def reproduce(ctx: click.Context, run_id: str, as_json: bool, tracking_uri: str | None,
              allow_failed_checks_reason: str | None) -> None:
    """Retrain MLflow run RUN_ID from its snapshot lock and compare metrics.

    Loads exactly the versions the run recorded (hash-verified, even when newer ones exist), retrains
    with the run's logged spec and seed, and compares every metric and the test predictions. Exit 0
    when identical, 1 when they differ, 2 when the run or its data cannot be had.
    """
    from snapshot_platform.training.lock import LockError
    from snapshot_platform.training.mlflow_logging import RunNotFound
    from snapshot_platform.training.reproduce import CannotReproduce, reproduce_run

    try:
        report = reproduce_run(run_id, tracking(tracking_uri), store_of(ctx), allow_failed_checks_reason)
    except (CannotReproduce, RunNotFound, LockError) as exc:
        fail(as_json, f"cannot reproduce run {run_id}: {exc}", run_id=run_id, identical=False)
        return
    if as_json:
        render.emit(report)
    else:
        render.reproduction(run_id, report)
    if not report.identical:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@tracking_option
@click.option("--batch-rows", default=65_536, show_default=True, type=click.IntRange(1),
              help="Rows per streamed batch in the data diffs.")
@click.pass_context
def compare(ctx: click.Context, run_a: str, run_b: str, as_json: bool, tracking_uri: str | None,
            batch_rows: int) -> None:
    """Compare two MLflow training runs: did the model improve, or did the data change?

    Metric deltas (b − a), model spec changes, and for each snapshot partition either run trained on
    a keyed data diff of the two versions: rows added, removed, changed, schema changes, and the shift
    of each column's summary statistics.
    """
    from snapshot_platform.training.compare import compare_runs
    from snapshot_platform.training.lock import LockError
    from snapshot_platform.training.mlflow_logging import RunNotFound

    try:
        report = compare_runs(run_a, run_b, tracking(tracking_uri), store_of(ctx), batch_rows=batch_rows)
    except (RunNotFound, LockError) as exc:
        fail(as_json, f"cannot compare: {exc}", run_a=run_a, run_b=run_b)
        return
    if as_json:
        render.emit(report)
    else:
        render.comparison(run_a, run_b, report)


COMMANDS = (reproduce, compare)
