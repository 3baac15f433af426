"""Row 3: the saga on RQ + real Redis (1 and 2 workers) versus a raw RQ chain of no-op jobs.

The measurement itself is benchmarks/rq_throughput.py (written with the RQ adapter and the
worker); benchmarks/_rq_driver.py runs its functions in a subprocess and adds the Redis command
count; this module turns the result into rows. When something it needs is missing, the row is
reported as pending with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._common import Mode, Row, latency_row

HERE = Path(__file__).resolve().parent
NAME = "3. distributed throughput (RQ + Redis, 1 and 2 workers)"
TARGET = "≥ 1.0× raw RQ chain"


def _pending(reason: str) -> list[Row]:
    return [Row(name=NAME, target=TARGET, status="pending", note=reason)]


def run(mode: Mode) -> list[Row]:
    if not (HERE / "rq_throughput.py").exists():
        return _pending("benchmarks/rq_throughput.py (RQ issue) does not exist yet")
    if importlib.util.find_spec("rq") is None or shutil.which("redis-server") is None:
        return _pending("needs rq (pip install 'statesaga[rq]') and redis-server on PATH")
    if mode == "smoke":
        return _pending("not run in smoke mode (starts redis-server and worker processes)")
    n = {"quick": 10, "full": 200}[mode]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks._rq_driver", "--workflows", str(n)],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,
        timeout=1800,
    )
    if out.returncode != 0:
        return [
            Row(
                name=NAME,
                target=TARGET,
                status="error",
                note=f"rq_throughput exited {out.returncode}: {out.stderr.strip()[-300:]}",
            )
        ]
    return _rows(json.loads(out.stdout.strip().splitlines()[-1]))


def _rows(data: dict[str, Any]) -> list[Row]:
    rows = []
    n = data["workflows"]
    for workers, r in sorted(data["workers"].items()):
        ratio = r["statesaga_steps_per_s"] / r["raw_jobs_per_s"]
        rows.append(
            Row(
                name=f"3. distributed throughput, {workers} worker(s), {n} wf × 5 steps",
                ours=r["statesaga_steps_per_s"],
                baseline=r["raw_jobs_per_s"],
                unit="steps/s",
                ratio=ratio,
                target=TARGET,
                met=ratio >= 1.0,
                note=f"{data['store']} store; raw RQ SimpleWorker chain of {n * 5} jobs",
                details=r,
            )
        )
    lat = data.get("latency")
    if lat:
        where = "RQ, 1 worker, redis store"
        rows.append(latency_row(where, lat["statesaga"], lat["raw"], "raw RQ chain of 3 jobs"))
    c = data["commands"]
    ratio = c["statesaga_per_step"] / c["raw_per_step"]
    rows.append(
        Row(
            name="5b. Redis commands per step (INFO commandstats)",
            ours=c["statesaga_per_step"],
            baseline=c["raw_per_step"],
            unit="commands/step",
            ratio=ratio,
            target="≤ raw RQ's own + the store's one script",
            met=c["statesaga_per_step"] <= c["raw_per_step"] + 1,
            note=(
                f"{c['statesaga_per_step'] - c['raw_per_step']:+.1f} commands/step against raw RQ"
                f" ({data['store']} store included); counted over {c['steps']} steps"
            ),
            details=c,
        )
    )
    return rows
