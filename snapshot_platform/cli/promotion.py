"""``snapshot-platform promote``: move a registered-model alias to a run's model version, only when it
is at least as good as the alias's holder on the same data (``training/promote.py``)."""

from __future__ import annotations

import sys

import click

from snapshot_platform.cli.common import EXIT_FAILED, catalog_of, fail, store_of, tracking, tracking_option
from snapshot_platform.cli.render import emit


@click.command()
@click.argument("run_id")
@click.option("--alias", required=True, help="The registered-model alias to move, e.g. champion.")
@click.option("--metric", default=None,
              help="Compare on this metric (default: the model's primary_metric in the catalog; roc_auc for "
                   "classifiers, r2 for regressors).")
@click.option("--force", "force_reason", default=None, metavar="REASON",
              help="Promote even when worse; REASON is recorded as a model-version tag.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@tracking_option
@click.pass_context
def promote(ctx: click.Context, run_id: str, alias: str, metric: str | None, force_reason: str | None,
            as_json: bool, tracking_uri: str | None) -> None:
    """Give ALIAS to the model version of MLflow run RUN_ID if it is at least as good as the holder.

    Both models are scored on the same data: the test rows of the challenger's snapshot lock (its
    versions, hash-verified, split as it was trained). Exit 0 promoted (or the first holder), 1
    refused (both figures printed), 2 when the run, its model or its data cannot be had.
    """
    from snapshot_platform.training.lock import LockError
    from snapshot_platform.training.mlflow_logging import RunNotFound
    from snapshot_platform.training.promote import CannotPromote, promote_run

    if force_reason is not None and not force_reason.strip():
        raise click.UsageError("--force needs a reason", ctx)
    primary = None
    try:
        catalog = catalog_of(ctx)
    except click.ClickException:
        catalog = None  # the logged spec's primary_metric, else the task's default
    try:
        t = tracking(tracking_uri)
        if catalog is not None:
            from snapshot_platform.training.promote import _spec_of

            name, _ = _spec_of(t, run_id)
            if name in catalog.models:
                primary = catalog.models[name].primary_metric
        report = promote_run(run_id, alias, t, store_of(ctx), metric=metric, primary_metric=primary,
                             force_reason=force_reason)
    except (CannotPromote, RunNotFound, LockError) as exc:
        fail(as_json, f"cannot promote run {run_id}: {exc}", run_id=run_id, promoted=False)
        return
    if as_json:
        emit(report.as_dict())
    else:
        click.echo(report.message, err=not report.promoted)
        if report.evaluated_on:
            ev = report.evaluated_on
            click.echo(f"  evaluated on the test rows ({ev['rows']}) of run {ev['lock_of_run']}'s lock: "
                       f"{', '.join(ev['snapshots'])}")
        for note in report.notes:
            click.echo(f"  note: {note}")
    if not report.promoted:
        sys.exit(EXIT_FAILED)


COMMANDS = (promote,)
