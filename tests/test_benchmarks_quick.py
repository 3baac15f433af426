"""`python -m benchmarks --smoke` keeps working: it runs every benchmark at tiny sizes and
writes a JSON file with one row per benchmark. Nothing here checks a timing (benchmarks are
not tests); it checks that the runner produces the rows a reader of the table relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_run_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke"
    assert {"cpu", "cores", "python"} <= set(data["machine"])
    rows = {row["name"].split(" ")[0]: row for row in data["rows"]}
    # Every numbered row is present; none of them broke.
    assert {"1.", "2.", "3.", "4.", "5."} <= set(rows)
    assert not [r for r in data["rows"] if r["status"] == "error"], data["rows"]
    # Measured rows carry their numbers; the counted round trips are exact.
    assert rows["1."]["ours"] > 0 and rows["1."]["baseline"] > 0
    # Eager dispatch (the default): the first step's claim, then one save per step; the
    # first step's job is the only enqueue and its claim the only read.
    steps = 5
    fives = [r for r in data["rows"] if r["name"].startswith("5. ")]
    eager = next(r for r in fives if "eager=False" not in r["name"])["details"]
    assert eager["job_writes_per_step"] == 1 + 1 / steps
    assert eager["job_reads_per_step"] == eager["enqueues_per_step"] == 1 / steps
    queued = next(r for r in fives if "eager=False" in r["name"])
    # Every step through the queue: one read (the claim; the settle reuses its document),
    # the claim and the settle, one enqueue.
    trips = queued["details"]
    assert trips["job_reads_per_step"] == 1.0
    assert trips["job_writes_per_step"] == 2.0
    assert trips["enqueues_per_step"] == 1.0
    # The started-marker (claimed is not started): no write where a lost attempt is harmless,
    # one (the step's own claim, no read) where it could halt the saga.
    marker = {r["name"].split(", a step ")[1]: r for r in data["rows"] if r["name"][:3] == "5c."}
    assert {kind: round(row["ours"], 9) for kind, row in marker.items()} == {
        "with a compensation": 0.0,
        "without one, before any pivot": 0.0,
        "read_only": 0.0,
        "at or past the pivot": 1.0,
        "under forward_retry": 1.0,
    }
    assert {row["details"]["job_reads_per_step"] for row in marker.values()} == {1 / steps}
    # Row 7f, the floor under row 7t's NORMAL target: NORMAL's step plus the fsyncs alone,
    # so slower than NORMAL and faster than nothing.
    floor = next(r for r in data["rows"] if r["name"].startswith("7f. "))
    assert 0 < floor["ours"] < floor["baseline"] and 0 < floor["ratio"] < 1
    assert "| benchmark |" in proc.stdout


@pytest.mark.parametrize(
    ("module", "args", "named"),
    [
        ("benchmarks.scaling", ["--levels", "0,8"], "--levels"),
        ("benchmarks.scaling", ["--levels", "one"], "--levels"),
        ("benchmarks.where", ["--layouts", "2y4"], "--layouts"),
        ("benchmarks.where", ["--layouts", "0x4"], "--layouts"),
        ("benchmarks.where", ["--workflows", "-3"], "--workflows"),
    ],
)
def test_a_benchmark_refuses_a_bad_argument_in_one_line(
    module: str, args: list[str], named: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and named in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
