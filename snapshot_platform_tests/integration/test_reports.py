"""The diff, compare and reproduce reports keep their JSON: the ``--json`` output of ``diff``,
``compare`` and ``reproduce`` is pinned byte for byte against files in ``golden/``, computed from
the reports as they were plain dicts (before they were typed). Only what differs between two runs of
the test is replaced by a placeholder: MLflow run ids, the temporary path, the timing and the code
version (it digests the package version).

No server: a local store, versions published here, MLflow on SQLite in the test's folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from snapshot_platform.catalog import ModelSpec
from snapshot_platform.cli import main
from snapshot_platform.store import Manifest, SnapshotStore, WriterSettings
from snapshot_platform.training.mlflow_logging import MlflowTracking
from snapshot_platform.training.train import train

GOLDEN = Path(__file__).parent / "golden"
ASSET = "events"
DAY1, DAY2 = "2024-01-01", "2024-01-02"


def _fields() -> dict[str, Any]:
    return {"window": {"start": "s", "end": "e"}, "query": "q", "query_sha256": "0" * 64, "params": {},
            "key": ["id"], "source": {"kind": "test"}, "source_state": {}, "dagster_run_id": None,
            "code_version": "t", "library_versions": {}}


def _rows(n: int, start: int = 0, shift: float = 0.0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"id": ids,
                     "x": [float(i % 17) + (shift if i % 5 == 0 else 0.0) for i in ids],
                     "z": [float(i % 7) for i in ids],
                     "y": [int(i % 17 > 8) for i in ids]})


def _spec(c: float) -> ModelSpec:
    return ModelSpec.model_validate({"snapshot": ASSET, "partitions": 2, "features": ["x", "z"], "target": "y",
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression",
                                                   "params": {"C": c}}})


@dataclass
class Runs:
    root: Path
    storage: Path
    uri: str
    run_a: str
    run_b: str
    v1: Manifest  # DAY1 as run a saw it
    v2: Manifest  # DAY1 as run b saw it
    codes: tuple[str, ...]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("reports")
    storage = root / "storage"
    store = SnapshotStore(storage, settings=WriterSettings(row_group_rows=64, part_rows=128))

    def publish(partition: str, table: pa.Table) -> Manifest:
        return store.publish(ASSET, partition, table.schema, table.to_batches(max_chunksize=50), _fields()).manifest

    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking = MlflowTracking(uri, artifact_root=str(root / "artifacts"))
    v1 = publish(DAY1, _rows(300))
    a = train("events_model", _spec(1.0), [v1], store, key=["id"])
    run_a = tracking.log_training(a, store, model_partition=DAY1).run_id
    v2 = publish(DAY1, pa.concat_tables([_rows(290, shift=2.5), _rows(20, start=400)]))
    d2 = publish(DAY2, _rows(200, start=1000))
    b = train("events_model", _spec(0.5), [v2, d2], store, key=["id"])
    run_b = tracking.log_training(b, store, model_partition=DAY2).run_id
    return Runs(root, storage, uri, run_a, run_b, v1, v2, (a.code_version, b.code_version))


def _stable(text: str, r: Runs) -> str:
    """The report's text with what differs from one test run to the next replaced by placeholders."""
    text = text.replace(r.run_a, "<run_a>").replace(r.run_b, "<run_b>").replace(str(r.root), "<tmp>")
    for i, code in enumerate(r.codes):
        text = text.replace(code, f"<code_{'ab'[i]}>")
    return re.sub(r'"seconds": [0-9.e-]+', '"seconds": "<seconds>"', text)


def _cli(r: Runs, *args: str, storage: Path | None = None) -> str:
    res = CliRunner().invoke(main, ["--storage", str(storage or r.storage), *args])
    assert res.exit_code in (0, 1), res.output
    return res.stdout


def _golden(name: str, text: str) -> None:
    """``text`` must equal the golden file; SNAPSHOT_PLATFORM_UPDATE_GOLDEN=1 rewrites it instead (then
    review the change with ``git diff``: only what was meant to change may differ)."""
    if os.environ.get("SNAPSHOT_PLATFORM_UPDATE_GOLDEN") == "1":
        (GOLDEN / name).write_text(text)
    assert text == (GOLDEN / name).read_text(), f"the {name} report's JSON changed"


def test_diff_json_is_unchanged(runs: Runs) -> None:
    out = _cli(runs, "diff", ASSET, DAY1, "--from", runs.v1.version, "--to", runs.v2.version, "--json",
               "--batch-rows", "40")
    _golden("diff.json", _stable(out, runs))
    same = _cli(runs, "diff", ASSET, DAY1, "--from", runs.v1.version, "--to", runs.v1.version, "--json")
    _golden("diff_same.json", _stable(same, runs))


def test_compare_json_is_unchanged(runs: Runs) -> None:
    out = _cli(runs, "compare", runs.run_a, runs.run_b, "--json", "--tracking-uri", runs.uri)
    _golden("compare.json", _stable(out, runs))
    same = _cli(runs, "compare", runs.run_a, runs.run_a, "--json", "--tracking-uri", runs.uri)
    _golden("compare_same.json", _stable(same, runs))
    # a version gone from the store: that partition's entry carries the error
    copy = runs.root / "storage-without-day2"
    if not copy.exists():
        shutil.copytree(runs.storage, copy)
        shutil.rmtree(copy / "snapshots" / ASSET / DAY2)
    gone = _cli(runs, "compare", runs.run_a, runs.run_b, "--json", "--tracking-uri", runs.uri, storage=copy)
    _golden("compare_missing.json", _stable(gone, runs).replace(str(copy), "<copy>"))


def test_reproduce_json_is_unchanged(runs: Runs) -> None:
    out = _cli(runs, "reproduce", runs.run_b, "--json", "--tracking-uri", runs.uri)
    # the test predictions' digest covers predict_proba's float64 bytes, whose last bits follow the
    # CPU's BLAS kernels (the golden was written on another machine): here it must equal the recorded
    # one; in the golden it is a placeholder
    predictions = json.loads(out)["predictions"]
    digest = predictions["recorded"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and predictions["reproduced"] == digest
    assert predictions["identical"] is True
    _golden("reproduce.json", _stable(out, runs).replace(digest, "<predictions sha256>"))
