"""Row 2: embedded throughput, statesaga on SQLite + inline versus DBOS on its SQLite database.

Both run the same saga (five sequential no-op steps) one workflow after another, with every
step's outcome committed to disk (synchronous=FULL) before the next step starts:

- statesaga: `Engine(SQLiteStore(path), InlineQueue(), registry, heartbeat_interval=0)`,
  `engine.run(definition)`; the store is WAL + synchronous=FULL (its default).
- DBOS: `@DBOS.workflow` calling five `@DBOS.step`s, system database `sqlite:///path`, as DBOS
  configures it (journal_mode=DELETE, synchronous=FULL), in a subprocess. A second DBOS run
  puts that file in WAL mode first, so both sides pay the same kind of commit: that pair
  isolates the framework from SQLite's journal mode.

The databases go in a directory on the disk the benchmark runs from (a tmpfs would make fsync
free and the comparison meaningless). fsync latency on shared virtual disks varies from second
to second, so the runs are interleaved and each side's best run is kept.

    python -m benchmarks.embedded [--quick] [--workflows N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from statesaga.adapters.inline import InlineQueue
from statesaga.adapters.sqlite import SQLiteStore
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus

from ._common import STEPS, Mode, Row, noop_definition, noop_registry

RESULTS = Path(__file__).resolve().parent / "results"


def run_statesaga(db: Path, workflows: int) -> dict[str, Any]:
    engine = Engine(SQLiteStore(db), InlineQueue(), noop_registry(), heartbeat_interval=0)
    definition = noop_definition()
    engine.run(definition)  # warm-up: schema creation and first-call costs
    t0 = time.perf_counter()
    for _ in range(workflows):
        wf = engine.run(definition)
        if wf.status is not WorkflowStatus.COMPLETED:
            raise RuntimeError(f"{wf.id} ended {wf.status.value}, not COMPLETED")
    seconds = time.perf_counter() - t0
    engine.store.close()
    return {"workflows": workflows, "steps": workflows * STEPS, "seconds": seconds}


def dbos_available() -> bool:
    return importlib.util.find_spec("dbos") is not None


def run_dbos(db: Path, workflows: int, wal: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks._dbos_peer", "--workflows", str(workflows)]
    cmd += ["--db", str(db)] + (["--wal"] if wal else [])
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"DBOS run failed ({out.returncode}): {out.stderr.strip()[-600:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _rate(r: dict[str, Any]) -> float:
    return float(r["steps"] / r["seconds"])


def run(mode: Mode, workflows: int | None = None, directory: Path | None = None) -> list[Row]:
    n = workflows or {"smoke": 3, "quick": 40, "full": 1000}[mode]
    rounds = {"smoke": 1, "quick": 2, "full": 2}[mode]
    with_dbos = mode != "smoke" and dbos_available()
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    ours: list[dict[str, Any]] = []
    peer: dict[str, list[dict[str, Any]]] = {"delete": [], "wal": []}
    with tempfile.TemporaryDirectory(prefix="embedded-", dir=base) as tmp:
        for r in range(rounds):
            ours.append(run_statesaga(Path(tmp) / f"statesaga-{r}.db", n))
            if with_dbos:
                peer["delete"].append(run_dbos(Path(tmp) / f"dbos-{r}.sqlite", n, wal=False))
                peer["wal"].append(run_dbos(Path(tmp) / f"dbos-wal-{r}.sqlite", n, wal=True))
    best = max(_rate(r) for r in ours)
    details: dict[str, Any] = {"workflows": n, "rounds": rounds, "statesaga": ours, "dbos": peer}
    name = f"2. embedded throughput ({n} wf × {STEPS} no-op steps, sqlite FULL)"
    if not with_dbos:
        why = "smoke mode" if mode == "smoke" else "dbos not installed (pip install dbos)"
        return [
            Row(
                name=name,
                ours=best,
                unit="steps/s",
                target="≥ 3× DBOS",
                status="pending",
                note=f"DBOS not run: {why}",
                details=details,
            )
        ]
    rows = []
    for journal, label, target in (
        ("delete", "DBOS as configured (journal=DELETE)", "≥ 3× DBOS"),
        ("wal", "DBOS with WAL (same journal as ours)", "(informational)"),
    ):
        peer_rate = max(_rate(r) for r in peer[journal])
        ratio = best / peer_rate
        rows.append(
            Row(
                name=name if journal == "delete" else "2b. embedded throughput vs DBOS on WAL",
                ours=best,
                baseline=peer_rate,
                unit="steps/s",
                ratio=ratio,
                target=target,
                met=ratio >= 3 if journal == "delete" else None,
                note=f"{label}; best of {rounds} interleaved runs",
                details=details,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workflows", type=int)
    args = parser.parse_args()
    for row in run("quick" if args.quick else "full", args.workflows):
        print(row.name, f"ours {row.ours:.0f} steps/s", f"baseline {row.baseline}", row.ratio)


if __name__ == "__main__":
    main()
