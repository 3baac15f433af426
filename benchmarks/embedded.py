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
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import WorkflowDefinition
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus

from ._common import STEPS, Mode, Row, latency_row, noop_definition, noop_registry

RESULTS = Path(__file__).resolve().parent / "results"


class Statesaga:
    """The engine on one SQLite file, warmed up, run a block of workflows at a time.

    With `in_flight` > 1, that many threads share the store (its group commit), each with its
    own engine and inline queue, as the request threads of a web application would."""

    def __init__(
        self, db: Path, synchronous: str = "full", eager: bool = True, in_flight: int = 1
    ) -> None:
        self.store = SQLiteStore(db, synchronous=synchronous)
        self.eager = eager
        self.in_flight = in_flight
        self.engines = threading.local()
        self.pool = ThreadPoolExecutor(in_flight) if in_flight > 1 else None
        self.definition = noop_definition()
        self.run_one(self.definition)  # warm-up: schema creation and first-call costs

    def engine(self) -> Engine:
        engine: Engine | None = getattr(self.engines, "engine", None)
        if engine is None:
            engine = Engine(
                self.store, InlineQueue(), noop_registry(), heartbeat_interval=0, eager=self.eager
            )
            self.engines.engine = engine
        return engine

    def run_one(self, definition: WorkflowDefinition) -> None:
        wf = self.engine().run(definition)
        if wf.status is not WorkflowStatus.COMPLETED:
            raise RuntimeError(f"{wf.id} ended {wf.status.value}, not COMPLETED")

    def block(self, n: int) -> float:
        t0 = time.perf_counter()
        if self.pool is None:
            for _ in range(n):
                self.run_one(self.definition)
        else:
            list(self.pool.map(lambda _: self.run_one(self.definition), range(n)))
        return time.perf_counter() - t0

    def latencies(self, n: int) -> list[float]:
        """Start -> COMPLETED of one three-step workflow at a time, in seconds."""
        definition = noop_definition(3)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.run_one(definition)
            samples.append(time.perf_counter() - t0)
        return samples

    def commits_per_write(self) -> float:
        group = self.store.group_commit
        return float(group.transactions / max(group.writes, 1))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.store.close()


def dbos_available() -> bool:
    return importlib.util.find_spec("dbos") is not None


class Dbos:
    """A DBOS process (benchmarks/_dbos_peer.py) that runs a block of workflows on request."""

    def __init__(self, db: Path, wal: bool, log: Path, in_flight: int = 1) -> None:
        self.in_flight = in_flight
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
        self.proc.stdin.write(f"{n} {self.in_flight}\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def latencies(self, n: int) -> list[float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"latency {n}\n")
        self.proc.stdin.flush()
        return [float(x) for x in self._read()["latencies"]]

    def close(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        settings = self._read()
        self.proc.wait(timeout=60)
        self.log.close()
        return settings


def _interleave(sides: dict[str, Any], n: int, block: int) -> dict[str, float]:
    """Run n workflows on every side, a block each in turn; each side's total seconds."""
    seconds = dict.fromkeys(sides, 0.0)
    done = 0
    while done < n:
        k = min(block, n - done)
        for name, side in sides.items():
            seconds[name] += side.block(k)
        done += k
    return seconds


def _dbos_sides(tmp: Path, logs: Path, tag: str, in_flight: int = 1) -> dict[str, Dbos]:
    """DBOS as it configures SQLite (journal=DELETE) and on a file made WAL first, as ours."""
    return {
        journal: Dbos(
            tmp / f"{tag}-{journal}.sqlite",
            journal == "wal",
            logs / f"{tag}-{journal}.log",
            in_flight=in_flight,
        )
        for journal in ("delete", "wal")
    }


def _close(sides: dict[str, Any], settings: dict[str, Any]) -> None:
    for name, side in sides.items():
        result = side.close()
        if isinstance(side, Dbos):
            settings[name] = result


def run(mode: Mode, workflows: int | None = None, directory: Path | None = None) -> list[Row]:
    n = workflows or {"smoke": 3, "quick": 60, "full": 1000}[mode]
    block = max(1, min(n, {"smoke": 3, "quick": 10, "full": 25}[mode]))
    with_dbos = mode != "smoke" and dbos_available()
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    commits: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="embedded-", dir=base) as tmp:
        # One workflow at a time: the default engine (eager dispatch), every step through the
        # queue (eager=False, the old default), and not durable per step (what fsyncs cost).
        sides: dict[str, Any] = {
            "statesaga": Statesaga(Path(tmp) / "statesaga.db"),
            "queued": Statesaga(Path(tmp) / "statesaga-queued.db", eager=False),
            "normal": Statesaga(Path(tmp) / "statesaga-normal.db", "normal"),
        }
        if with_dbos:
            sides.update(_dbos_sides(Path(tmp), base, "dbos"))
        try:
            seconds = _interleave(sides, n, block)
            commits = {
                name: side.commits_per_write()
                for name, side in sides.items()
                if isinstance(side, Statesaga)
            }
            # Latency: start -> COMPLETED of a 3-step saga, one at a time, interleaved too.
            samples = {"smoke": 5, "quick": 40, "full": 300}[mode]
            ours_lat: list[float] = []
            peer_lat: list[float] | None = [] if with_dbos else None
            for _ in range(0, samples, 20):
                ours_lat += sides["statesaga"].latencies(min(20, samples - len(ours_lat)))
                if peer_lat is not None:
                    peer_lat += sides["delete"].latencies(min(20, samples - len(peer_lat)))
        finally:
            _close(sides, settings)
        # Workflows in flight at once: statesaga threads sharing the store (group commit)
        # against DBOS running as many at once, as DBOS configures SQLite.
        in_flight: dict[int, dict[str, float]] = {}
        for k in (8, 32) if mode != "smoke" else ():
            many: dict[str, Any] = {
                "statesaga": Statesaga(Path(tmp) / f"statesaga-{k}.db", in_flight=k)
            }
            if with_dbos:
                many.update(_dbos_sides(Path(tmp), base, f"dbos-{k}", in_flight=k))
            rounds = {"quick": 2, "full": 8}[mode]
            try:
                took = _interleave(many, rounds * 4 * k, 4 * k)
                in_flight[k] = {
                    "workflows": rounds * 4 * k,
                    **{f"{name}_seconds": t for name, t in took.items()},
                    "statesaga_commits_per_save": many["statesaga"].commits_per_write(),
                }
            finally:
                _close(many, settings)
    steps = n * STEPS
    ours = steps / seconds["statesaga"]
    details: dict[str, Any] = {
        "workflows": n,
        "block": block,
        "seconds": seconds,
        "statesaga_synchronous_normal_steps_per_s": steps / seconds["normal"],
        "statesaga_queued_steps_per_s": steps / seconds["queued"],
        "dbos_settings": settings,
        # Transactions (each one fsync with synchronous=FULL) per store write, from the store.
        "commits_per_write": commits,
        "in_flight": in_flight,
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
            ),
            latency_row("embedded", ours_lat, None, "DBOS"),
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
    dbos_rate = steps / seconds["delete"]
    queued_rate = steps / seconds["queued"]
    rows.append(
        Row(
            name="2d. embedded, every step through the queue (eager=False) vs DBOS (DELETE)",
            ours=queued_rate,
            baseline=dbos_rate,
            unit="steps/s",
            ratio=queued_rate / dbos_rate,
            target="(informational)",
            note=(
                "Engine(eager=False), the old default: claim and settle are two commits per"
                f" step; {commits['queued'] * 100:.0f} transactions per 100 store writes"
            ),
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
    for (k, r), journal in itertools.product(in_flight.items(), ("delete", "wal")):
        rate = r["workflows"] * STEPS / r["statesaga_seconds"]
        peer = r["workflows"] * STEPS / r[f"{journal}_seconds"]
        targeted = k == 8 and journal == "delete"
        rows.append(
            Row(
                name=f"2e. embedded, {k} workflows in flight vs DBOS {k} at once"
                + (" (as it configures SQLite, DELETE)" if journal == "delete" else " on WAL"),
                ours=rate,
                baseline=peer,
                unit="steps/s",
                ratio=rate / peer,
                target="≥ 6× DBOS" if targeted else "(informational)",
                met=rate / peer >= 6 if targeted else None,
                note=(
                    f"{r['workflows']} wf; {k} threads sharing one store (group commit:"
                    f" {r['statesaga_commits_per_save'] * 100:.0f} transactions per 100 writes)"
                    f" vs DBOS on {k} threads; interleaved in blocks of {4 * k}"
                ),
                details=r,
            )
        )
    rows.append(latency_row("embedded", ours_lat, peer_lat, "DBOS (DELETE)"))
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
