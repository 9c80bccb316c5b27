"""The dedupe benchmark's ratio (issue: deduplicated storage): ``benchmarks/dedupe.py`` on the test
PostgreSQL server, 1M rows, as-of snapshots through the real CLI with ``--accept-late``; the second
partition (+1% rows at the end of the key range, 0.1% updated in one key range) adds at most 10% of
the first's bytes to the storage root, and both versions verify. The benchmark creates and drops
its own database (a name of its own here)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "dedupe.py"


@pytest.mark.slow
def test_the_next_partition_adds_at_most_a_tenth_of_the_first(pg_server: str) -> None:
    server = pg_server.rsplit("/", 1)[0]
    db = f"sp_test_dedupe_{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, str(BENCHMARK), "--server", server, "--db", db, "--json", "--check"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["pass"] is True and result["verified"] is True and result["late"] == [True, True]
    assert (result["rows_a"], result["rows_b"]) == (1_000_000, 1_010_000)
    assert result["added_by_b"] <= 0.10 * result["bytes_a"]
    assert result["full_copy_ratio"] > 1.0  # what a full copy would have added: the peer
    assert 0 < result["new_parts_b"] < result["parts_b"] // 10
