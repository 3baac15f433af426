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
free and the comparison meaningless). fsync latency on shared virtual disks drifts by several
times within minutes, so the sides run interleaved, a block of workflows each in turn, and
each side's rate is its total steps over its total time.

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


class Statesaga:
    """The engine on one SQLite file, warmed up, run a block of workflows at a time."""

    def __init__(self, db: Path, synchronous: str = "full", eager: bool = False) -> None:
        self.store = SQLiteStore(db, synchronous=synchronous)
        self.engine = Engine(
            self.store, InlineQueue(), noop_registry(), heartbeat_interval=0, eager=eager
        )
        self.definition = noop_definition()
        self.engine.run(self.definition)  # warm-up: schema creation and first-call costs

    def block(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            wf = self.engine.run(self.definition)
            if wf.status is not WorkflowStatus.COMPLETED:
                raise RuntimeError(f"{wf.id} ended {wf.status.value}, not COMPLETED")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.store.close()


def dbos_available() -> bool:
    return importlib.util.find_spec("dbos") is not None


class Dbos:
    """A DBOS process (benchmarks/_dbos_peer.py) that runs a block of workflows on request."""

    def __init__(self, db: Path, wal: bool, log: Path) -> None:
        cmd = [sys.executable, "-m", "benchmarks._dbos_peer", "--db", str(db)]
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            cmd + (["--wal"] if wal else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._read()  # {"ready": true} once DBOS has launched and warmed up

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data
        self.log.flush()
        raise RuntimeError(f"DBOS process ended ({self.proc.wait()}); see {self.log.name}")

    def block(self, n: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        settings = self._read()
        self.proc.wait(timeout=60)
        self.log.close()
        return settings


def run(mode: Mode, workflows: int | None = None, directory: Path | None = None) -> list[Row]:
    n = workflows or {"smoke": 3, "quick": 60, "full": 1000}[mode]
    block = max(1, min(n, {"smoke": 3, "quick": 10, "full": 25}[mode]))
    with_dbos = mode != "smoke" and dbos_available()
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {
        "statesaga": 0.0,
        "eager": 0.0,
        "normal": 0.0,
        "delete": 0.0,
        "wal": 0.0,
    }
    settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="embedded-", dir=base) as tmp:
        sides: dict[str, Any] = {
            "statesaga": Statesaga(Path(tmp) / "statesaga.db"),
            # Opt-in eager dispatch: the settle claims the next step (one commit per step).
            "eager": Statesaga(Path(tmp) / "statesaga-eager.db", eager=True),
            # Not durable per step: run alongside to show what the fsyncs cost (the profile).
            "normal": Statesaga(Path(tmp) / "statesaga-normal.db", "normal"),
        }
        if with_dbos:
            for journal in ("delete", "wal"):
                sides[journal] = Dbos(
                    Path(tmp) / f"dbos-{journal}.sqlite",
                    journal == "wal",
                    base / f"dbos-{journal}.log",
                )
        try:
            done = 0
            while done < n:
                k = min(block, n - done)
                for name, side in sides.items():
                    seconds[name] += side.block(k)
                done += k
        finally:
            for name, side in sides.items():
                result = side.close()
                if name in ("delete", "wal"):
                    settings[name] = result
    steps = n * STEPS
    ours = steps / seconds["statesaga"]
    details: dict[str, Any] = {
        "workflows": n,
        "block": block,
        "seconds": seconds,
        "statesaga_synchronous_normal_steps_per_s": steps / seconds["normal"],
        "statesaga_eager_steps_per_s": steps / seconds["eager"],
        "dbos_settings": settings,
        # Counted with strace -f -c (fdatasync calls / steps) on this machine; see the README.
        "commits_per_step": {"statesaga": 2.2},
    }
    name = f"2. embedded throughput ({n} wf × {STEPS} no-op steps, sqlite FULL)"
    if not with_dbos:
        why = "smoke mode" if mode == "smoke" else "dbos not installed (pip install dbos)"
        return [
            Row(
                name=name,
                ours=ours,
                unit="steps/s",
                target="≥ 3× DBOS",
                status="pending",
                note=f"DBOS not run: {why}",
                details=details,
            )
        ]
    rows = []
    for journal, label, target in (
        ("delete", "DBOS as it configures SQLite (journal=DELETE)", "≥ 3× DBOS"),
        ("wal", "DBOS on the same file made WAL first, as ours", "(informational)"),
    ):
        peer_rate = steps / seconds[journal]
        ratio = ours / peer_rate
        rows.append(
            Row(
                name=name if journal == "delete" else "2b. embedded throughput vs DBOS on WAL",
                ours=ours,
                baseline=peer_rate,
                unit="steps/s",
                ratio=ratio,
                target=target,
                met=ratio >= 3 if journal == "delete" else None,
                note=f"{label}; interleaved in blocks of {block} workflows",
                details=details,
            )
        )
    eager_rate = steps / seconds["eager"]
    rows.append(
        Row(
            name="2d. embedded with eager dispatch (opt-in) vs DBOS (journal=DELETE)",
            ours=eager_rate,
            baseline=steps / seconds["delete"],
            unit="steps/s",
            ratio=eager_rate / (steps / seconds["delete"]),
            target="≥ 3× DBOS",
            met=eager_rate / (steps / seconds["delete"]) >= 3,
            note="Engine(eager=True): one commit per step; a claimed step counts as in flight",
        )
    )
    rows.append(
        Row(
            name="2c. statesaga FULL vs its own synchronous=NORMAL (the fsync share)",
            ours=ours,
            baseline=steps / seconds["normal"],
            unit="steps/s",
            ratio=ours / (steps / seconds["normal"]),
            target="(informational)",
            note="NORMAL is not durable per step; the gap is what the fsyncs cost",
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
