"""Two training runs side by side: did the model improve, or did the data change?

Metrics (a, b, delta, which is better), the model spec and code version of each, and for every
snapshot partition either run trained on, a keyed data diff of the two versions (``store/diff.py``).
The verdict names what differs: only the data, only the model, both (confounded), or neither.
"""

from __future__ import annotations

from typing import Any

from snapshot_platform.store import Manifest, SnapshotNotFound, SnapshotStore
from snapshot_platform.store.diff import DEFAULT_BATCH_ROWS, DiffError, diff_versions
from snapshot_platform.training.lock import LockEntry
from snapshot_platform.training.mlflow_logging import MODEL_SPEC_NAME, MlflowTracking
from snapshot_platform.training.reports import (
    CodeVersions,
    CompareReport,
    MetricDelta,
    PartitionDiff,
    RunPair,
    SpecChange,
    Verdict,
)

HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}
LOWER_IS_BETTER = {"mae", "rmse"}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def metric_deltas(a: dict[str, float], b: dict[str, float]) -> dict[str, MetricDelta]:
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        delta = vb - va if va is not None and vb is not None else None
        better = None
        if delta is not None:
            if delta == 0:
                better = "same"
            elif k in HIGHER_IS_BETTER:
                better = "b" if delta > 0 else "a"
            elif k in LOWER_IS_BETTER:
                better = "b" if delta < 0 else "a"
        out[k] = MetricDelta(a=va, b=vb, delta=delta, better=better)
    return out


def _manifest(store: SnapshotStore, entry: LockEntry | None) -> Manifest | None:
    if entry is None:
        return None
    return store.read_manifest(entry.asset, entry.partition, entry.version)


def verdict(metrics: dict[str, MetricDelta], data: list[PartitionDiff], spec_changes: list[SpecChange],
            code_a: str | None, code_b: str | None) -> Verdict:
    data_changed = any(d.changed for d in data)
    model_changed = bool(spec_changes) or code_a != code_b
    metrics_changed = any(m.delta not in (0, 0.0, None) for m in metrics.values())
    improved = sorted(k for k, m in metrics.items() if m.better == "b")
    worsened = sorted(k for k, m in metrics.items() if m.better == "a")
    rows = {k: sum(d.rows(k) or 0 for d in data) for k in ("rows_added", "rows_removed", "rows_changed")}
    parts = sum(1 for d in data if d.changed)
    data_text = (f"{rows['rows_added']} rows added, {rows['rows_removed']} removed, {rows['rows_changed']} changed "
                 f"in {parts} partition{'s' if parts != 1 else ''}")
    if not data_changed and not model_changed:
        cause = "nothing"
        text = ("Same data, same model spec and code: " +
                ("identical metrics, as expected." if not metrics_changed else
                 "yet the metrics differ, so training is not deterministic here (compare library versions)."))
    elif data_changed and not model_changed:
        cause = "data"
        text = (f"Only the data changed ({data_text}); the model spec and code are the same, so the metric "
                "differences come from the data, not from a better or worse model.")
    elif model_changed and not data_changed:
        cause = "model"
        fields = ", ".join(c.field for c in spec_changes) or "the training code"
        text = (f"Only the model changed ({fields}), on identical data: the metric differences are the model's.")
    else:
        cause = "both"
        text = (f"Both the data ({data_text}) and the model changed: the metric differences cannot be "
                "attributed to either alone. Train one spec on the other's data (pinned_versions) to separate them.")
    return Verdict(cause=cause, data_changed=data_changed, model_changed=model_changed,
                   metrics_changed=metrics_changed, improved=tuple(improved), worsened=tuple(worsened),
                   text=text)


def compare_runs(
    run_a: str, run_b: str, tracking: MlflowTracking, store: SnapshotStore, batch_rows: int = DEFAULT_BATCH_ROWS
) -> CompareReport:
    ra, rb = tracking.get_run(run_a), tracking.get_run(run_b)
    la, lb = tracking.load_lock(run_a), tracking.load_lock(run_b)
    sa, sb = tracking.load_json(run_a, MODEL_SPEC_NAME), tracking.load_json(run_b, MODEL_SPEC_NAME)

    metrics = metric_deltas(dict(ra.data.metrics), dict(rb.data.metrics))

    fa, fb = _flatten(sa["spec"]), _flatten(sb["spec"])
    spec_changes = [SpecChange(field=k, a=fa.get(k), b=fb.get(k))
                    for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k) and k != "description"]
    if sa["name"] != sb["name"]:
        spec_changes.insert(0, SpecChange(field="name", a=sa["name"], b=sb["name"]))
    code_a, code_b = ra.data.params.get("code_version"), rb.data.params.get("code_version")

    ea = {(e.asset, e.partition): e for e in la.snapshots}
    eb = {(e.asset, e.partition): e for e in lb.snapshots}
    data: list[PartitionDiff] = []
    for asset, partition in sorted(set(ea) | set(eb)):
        a, b = ea.get((asset, partition)), eb.get((asset, partition))
        entry = dict(asset=asset, partition=partition, version_a=a and a.version, version_b=b and b.version,
                     in_run="both" if a and b else ("a" if a else "b"))
        try:
            ma, mb = _manifest(store, a), _manifest(store, b)
            data.append(PartitionDiff(**entry, diff=diff_versions(store, ma, mb, batch_rows=batch_rows)))
        except (SnapshotNotFound, DiffError) as exc:
            data.append(PartitionDiff(**entry, error=str(exc)))

    return CompareReport(
        run_a=run_a,
        run_b=run_b,
        model_a=sa["name"],
        model_b=sb["name"],
        metrics=metrics,
        data=tuple(data),
        spec_changes=tuple(spec_changes),
        code_version=CodeVersions(a=code_a, b=code_b, same=code_a == code_b),
        rows_train=RunPair(a=ra.data.params.get("rows_train"), b=rb.data.params.get("rows_train")),
        rows_test=RunPair(a=ra.data.params.get("rows_test"), b=rb.data.params.get("rows_test")),
        verdict=verdict(metrics, data, spec_changes, code_a, code_b),
    )
