"""Row 7: the scaling curve, steps/s as the number of workflows in flight grows.

    python -m benchmarks.scaling [--quick] [--levels 1,2,4,8,32] [--no-dbos] [--no-rq]

The saga is row 2's (five sequential no-op steps, every step's outcome on disk before the next
starts: SQLite synchronous=FULL). At each level k of workflows in flight:

- embedded: k threads of one process sharing one SQLite store (its group commit), as the
  request threads of a web application run sagas (`benchmarks.embedded.Statesaga`).
- ceiling: the same k threads on the memory store: no I/O, the engine's CPU alone. One
  process runs Python on one core at a time (the GIL), so this is the most threads in one
  process can do, whatever the store.
- pinned: the embedded engine in one process per core (up to k), each on a CPU of its own
  (statesaga.runtime.cpu) with its share of the k workflows on threads, all on one SQLite
  file: a web server's worker processes running sagas, each process's threads kept on one
  core so they do not pass the GIL between cores.
- sqlq: `statesaga worker` processes sharing one SQLite file as store and queue (`sqlq://`),
  one per core (up to k, each `--cpu` pinned) with k in all running at once (`?threads=`),
  this process starting the workflows: what the machine's other cores add, without Redis.
- DBOS: k workflows at once on k threads, its SQLite system database as DBOS configures it
  (the bench extra; without it the DBOS columns say so).
- RQ: 1, 2 and 4 `statesaga worker` processes on RQ and Redis (the Redis store), as
  benchmarks/rq_throughput.py runs them, against DBOS at the same concurrency.

At one in flight, two more sides: `normal`, the embedded engine with synchronous=NORMAL (not
durable per step), and `fsync`, the floor: nothing but the fsyncs a workflow durable at its
start and after each step needs at least (`FsyncFloor`), so row 7f says how close to NORMAL
this engine could come on this disk if durability cost it no more than the least SQLite
commits it could make.

The in-process sides run interleaved, a block each in turn (fsync latency on a shared disk
drifts by several times within minutes); each round then runs the process sides once. An
untimed round comes first, so every file is measured in its steady state. Worker
processes are started and registered before the clock starts; the clock stops when the last
workflow is COMPLETED. Every ratio is of figures from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.queues.sqlite.queue import SQLiteQueue
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus
from statesaga.ports import Store
from statesaga.runtime.cpu import cpu_for, usable_cpus
from statesaga.security.allowlist import AllowList

from ._common import STEPS, Mode, Row, noop_definition, noop_registry
from .embedded import RESULTS, Dbos, Statesaga, dbos_available

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = "benchmarks._noop_handlers"
SAGA = {
    "workflow": "bench_noop_workers",
    "handlers": [HANDLERS],
    "steps": [{"name": f"s{i}", "action": "noop"} for i in range(STEPS)],
}
LEVELS = (1, 2, 4, 8, 32)
RQ_WORKERS = (1, 2, 4)


class Ceiling(Statesaga):
    """`Statesaga` on the memory store: the same engine and threads, no I/O."""

    def __init__(self, in_flight: int) -> None:
        self.store: Store = MemoryStore()  # type: ignore[assignment]
        self.eager = True
        self.in_flight = in_flight
        self.engines = threading.local()
        self.pool = ThreadPoolExecutor(in_flight) if in_flight > 1 else None
        self.definition = noop_definition()
        self.run_one(self.definition)

    def engine(self) -> Engine:
        engine: Engine | None = getattr(self.engines, "engine", None)
        if engine is None:
            engine = Engine(self.store, InlineQueue(), noop_registry(), heartbeat_interval=0)
            self.engines.engine = engine
        return engine

    def commits_per_write(self) -> float:
        return 0.0


class FsyncFloor:
    """The least a SQLite store can take to make a workflow durable at its start and after
    each step: one commit each (STEPS + 1 per workflow), each the smallest commit SQLite makes,
    one WAL frame (a 4,096-byte page and its 24-byte header) written into a wrapped 4 MB WAL
    and fdatasync'ed. No engine and no SQLite: with the engine's own CPU per step (its NORMAL
    side), no SQLite store that commits each step before the next can be faster than NORMAL's
    step plus this (row 7f)."""

    FRAME = 4096 + 24
    WAL = 4 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        # Written and synced once: the frames then overwrite blocks the file already has, as
        # a WAL does once it has wrapped (an fsync that grows a file costs about twice as much).
        os.pwrite(self.fd, b"\0" * self.WAL, 0)
        os.fsync(self.fd)
        self.frame = os.urandom(self.FRAME)
        self.offset = 32  # the WAL header
        self.block(1)

    def block(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n * (STEPS + 1)):
            os.pwrite(self.fd, self.frame, self.offset)
            os.fdatasync(self.fd)
            self.offset += self.FRAME
            if self.offset + self.FRAME > self.WAL:
                self.offset = 32
        return time.perf_counter() - t0

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def shape(in_flight: int) -> tuple[int, int]:
    """Worker processes and threads each for `in_flight` workflows at once: a process per core
    (more would only share the cores), threads for the rest (their saves share a commit)."""
    processes = min(in_flight, os.cpu_count() or 1)
    return processes, -(-in_flight // processes)


class Workers:
    """`statesaga worker` processes on one SQLite file (store and sqlq:// queue), each running
    `threads` jobs at once."""

    def __init__(self, db: Path, processes: int, threads: int, log: Path) -> None:
        store_url, queue_url = f"sqlite:///{db}", f"sqlq:///{db}?threads={threads}"
        self.store = SQLiteStore(db)
        self.queue = SQLiteQueue(db)
        self.engine = Engine(
            self.store, self.queue, heartbeat_interval=0, allowed=AllowList.of([HANDLERS])
        )
        self.definition = load_definition(SAGA)
        self.done = 0
        self.log = log.open("ab")
        cmd = [sys.executable, "-m", "statesaga.cli", "worker", "--queue", queue_url,
               "--store", store_url, "--handlers", HANDLERS, "--log-level", "WARNING"]  # fmt: skip
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        pin = processes <= len(usable_cpus())
        self.procs = [
            subprocess.Popen(
                cmd + ([f"--cpu={cpu_for(i)}"] if pin else []),
                cwd=ROOT,
                env=env,
                stdout=self.log,
                stderr=self.log,
            )
            for i in range(processes)
        ]
        deadline = time.monotonic() + 120
        while self.queue.worker_count() < processes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.close()
                raise RuntimeError(f"sqlq workers did not start; see {log}")
            time.sleep(0.05)

    def block(self, n: int) -> float:
        """Start n workflows here; seconds until every one is COMPLETED."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.engine.start(self.definition, {})
        self.done += n
        while self.store.count_by_status().get(WorkflowStatus.COMPLETED.value, 0) < self.done:
            time.sleep(0.005)
        return time.perf_counter() - t0

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(60)
        self.log.close()
        self.queue.close()
        self.store.close()


class Pinned:
    """Row 7p: `processes` embedded processes (benchmarks/_embedded_peer.py) on one SQLite
    file, each pinned to a CPU of its own with `threads` workflows at once."""

    def __init__(self, db: Path, processes: int, threads: int, log: Path) -> None:
        self.log = log.open("ab")
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks._embedded_peer",
                    "--db",
                    str(db),
                    "--threads",
                    str(threads),
                    "--cpu",
                    str(cpu_for(i)),
                ],  # fmt: skip
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
            )
            for i in range(processes)
        ]
        for proc in self.procs:
            self._answer(proc)  # {"ready": true} once warmed up

    def _answer(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("{"):
            self.log.flush()
            raise RuntimeError(f"embedded process ended ({proc.wait()}); see {self.log.name}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def block(self, n: int) -> float:
        """n workflows shared out between the processes; seconds until the last is done."""
        share = [n // len(self.procs) + (i < n % len(self.procs)) for i in range(len(self.procs))]
        t0 = time.perf_counter()
        for proc, k in zip(self.procs, share, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"{k}\n")
            proc.stdin.flush()
        for proc in self.procs:
            self._answer(proc)
        return time.perf_counter() - t0

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(60)
        self.log.close()


def _rq_rates(workers: tuple[int, ...], n: int, tmp: Path) -> dict[int, float]:
    """statesaga on RQ + Redis with 1, 2, 4 worker processes (benchmarks/rq_throughput.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rq_throughput

    with rq_throughput.redis_server(None) as url:
        return {w: rq_throughput.run_statesaga(url, w, n, "redis", tmp) for w in workers}


def run(
    mode: Mode,
    levels: tuple[int, ...] | None = None,
    *,
    dbos: bool = True,
    rq: bool = True,
    directory: Path | None = None,
) -> list[Row]:
    levels = levels or ((1, 2) if mode == "smoke" else LEVELS)
    # Workflows per block: `per_level` per workflow in flight, at least `least`.
    per_level = {"smoke": 1, "quick": 4, "full": 16}[mode]
    least = {"smoke": 3, "quick": 24, "full": 100}[mode]
    rounds = {"smoke": 1, "quick": 2, "full": 4}[mode]
    with_dbos = dbos and mode != "smoke" and dbos_available()
    processes = mode != "smoke"
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    rates: dict[str, dict[int, float]] = {}
    commits: dict[int, float] = {}
    rq_why: str | None = None
    with tempfile.TemporaryDirectory(prefix="scaling-", dir=base) as tmp_name:
        tmp = Path(tmp_name)
        for k in levels:
            n = max(per_level * k, least)
            sides: dict[str, Any] = {
                "embedded": Statesaga(tmp / f"embedded-{k}.db", in_flight=k),
                "ceiling": Ceiling(k),
            }
            if k == 1:
                sides["normal"] = Statesaga(tmp / "normal.db", "normal")
                sides["fsync"] = FsyncFloor(tmp / "fsync-floor")
            if with_dbos:
                sides["dbos"] = Dbos(tmp / f"dbos-{k}.sqlite", False, base / f"dbos-{k}.log", k)
            # One process per core with threads, and (up to 8) one process per workflow.
            pools: dict[str, Workers | Pinned] = {}
            try:
                if processes:
                    pools["pinned"] = Pinned(tmp / f"pinned-{k}.db", *shape(k), base / "pinned.log")
                    if shape(k)[0] > 1:
                        pools["pinned_one"] = Pinned(
                            tmp / f"pinned-one-{k}.db", 1, k, base / "pinned.log"
                        )
                    pools["sqlq"] = Workers(tmp / f"sqlq-{k}.db", *shape(k), base / "sqlq.log")
                    if shape(k) != (k, 1) and k <= 8:
                        pools["sqlq_processes"] = Workers(
                            tmp / f"sqlq-p{k}.db", k, 1, base / "sqlq.log"
                        )
                seconds = dict.fromkeys([*sides, *pools], 0.0)
                if mode != "smoke":
                    # An untimed round first: a new file's first ~4 MB of WAL grow the file,
                    # and an fsync that grows a file costs about twice one that overwrites
                    # (measured on this ext4: 0.25 vs 0.13-0.18 ms); a running store's WAL
                    # has long since wrapped. Every side, DBOS too, starts from its steady state.
                    for side in [*sides.values(), *pools.values()]:
                        side.block(n)
                for _ in range(rounds):
                    for name, side in [*sides.items(), *pools.items()]:
                        seconds[name] += side.block(n)
                commits[k] = sides["embedded"].commits_per_write()
            finally:
                for side in [*sides.values(), *pools.values()]:
                    side.close()
            for name, took in seconds.items():
                rates.setdefault(name, {})[k] = rounds * n * STEPS / took
        if rq and mode != "smoke":
            rq_n = {"quick": 20, "full": 200}[mode]
            try:
                rates["rq"] = _rq_rates(RQ_WORKERS, rq_n, tmp)
            except (ImportError, SystemExit) as exc:  # no rq, or no redis-server
                rq_why = f"RQ not run: {type(exc).__name__}: {exc}"
        if with_dbos:
            for w in RQ_WORKERS:
                if "rq" in rates and w not in rates["dbos"]:
                    side = Dbos(tmp / f"dbos-rq-{w}.sqlite", False, base / f"dbos-{w}.log", w)
                    try:
                        n = max(per_level * w, least) * rounds
                        rates["dbos"][w] = n * STEPS / side.block(n)
                    finally:
                        side.close()
    dbos_why = None
    if not with_dbos:
        why = "not asked for" if not dbos else "smoke mode" if mode == "smoke" else None
        dbos_why = f"DBOS not run: {why or 'pip install dbos (the bench extra)'}"
    return _rows(rates, commits, dbos_why, rq_why)


def _rows(
    rates: dict[str, dict[int, float]],
    commits: dict[int, float],
    dbos_why: str | None,
    rq_error: str | None,
) -> list[Row]:
    emb, ceiling = rates["embedded"], rates["ceiling"]
    dbos = rates.get("dbos", {})
    one = emb[min(emb)]
    rows = []

    def against_dbos(
        name: str, ours: float, k: int, target: str, wanted: float | None, note: str
    ) -> Row:
        peer = dbos.get(k)
        ratio = None if peer is None else ours / peer
        return Row(
            name=name,
            ours=ours,
            baseline=peer,
            unit="steps/s",
            ratio=ratio,
            target=target if wanted is not None else "(informational)",
            met=None if ratio is None or wanted is None else ratio >= wanted,
            note=note + ("" if dbos_why is None else f"; {dbos_why}"),
        )

    for k in sorted(emb):
        rows.append(
            against_dbos(
                f"7. {k} in flight, embedded (threads of one process) vs DBOS {k}",
                emb[k],
                k,
                "≥ 3× DBOS" if k == 1 else "≥ 6× DBOS",
                3.0 if k == 1 else 6.0 if k == 8 else None,
                f"{emb[k] / one:.2f}× its one at a time; ceiling (memory store, {k} threads)"
                f" {ceiling[k]:,.0f} steps/s, {emb[k] / ceiling[k]:.0%} of it;"
                f" {commits[k] * 100:.0f} transactions per 100 writes",
            )
        )
    for k, rate in sorted(rates.get("pinned", {}).items()):
        p, t = shape(k)
        rows.append(
            against_dbos(
                f"7p. {k} in flight, {p} embedded process(es) × {t} thread(s), one CPU each,"
                f" vs DBOS {k}",
                rate,
                k,
                "≥ 6× DBOS",
                6.0 if k == 8 else None,
                f"{rate / one:.2f}× embedded one at a time; one SQLite file, each process"
                " pinned (statesaga.runtime.cpu)",
            )
        )
    for k, rate in sorted(rates.get("pinned_one", {}).items()):
        rows.append(
            against_dbos(
                f"7p. {k} in flight, 1 embedded process × {k} threads on one CPU vs DBOS {k}",
                rate,
                k,
                "",
                None,
                f"{rate / one:.2f}× embedded one at a time (row 7's threads, pinned)",
            )
        )
    for k, rate in sorted(rates.get("sqlq", {}).items()):
        p, t = shape(k)
        rows.append(
            against_dbos(
                f"7b. {k} in flight, {p} worker process(es) × {t} thread(s) on sqlq:// vs DBOS {k}",
                rate,
                k,
                "≥ 6× DBOS",
                6.0 if k == 8 else None,
                f"{rate / one:.2f}× embedded one at a time; one SQLite file for store and"
                " queue, workflows started by the benchmark process",
            )
        )
    for w, rate in sorted(rates.get("rq", {}).items()):
        rows.append(
            against_dbos(
                f"7c. {w} RQ worker(s) (Redis store) vs DBOS {w}",
                rate,
                w,
                "",
                None,
                f"{rate / one:.2f}× embedded one at a time",
            )
        )
    for k, rate in sorted(rates.get("sqlq_processes", {}).items()):
        rows.append(
            against_dbos(
                f"7b. {k} in flight, {k} worker processes × 1 thread on sqlq:// vs DBOS {k}",
                rate,
                k,
                "",
                None,
                f"{rate / one:.2f}× embedded one at a time; more processes than cores",
            )
        )
    if rq_error:
        rows.append(Row(name="7c. RQ workers", status="pending", note=rq_error))
    best8 = max(
        emb.get(8, 0.0),
        *(rates.get(s, {}).get(8, 0.0) for s in ("pinned", "pinned_one", "sqlq", "sqlq_processes")),
    )
    if 8 in emb:
        rows.append(
            Row(
                name="7t. 8 in flight vs one at a time, same run (best of embedded, pinned, sqlq)",
                ours=best8,
                baseline=one,
                unit="steps/s",
                ratio=best8 / one,
                target="≥ 2×",
                met=best8 / one >= 2,
                note=f"embedded {emb[8] / one:.2f}×"
                + (
                    f", pinned {rates['pinned'][8] / one:.2f}×"
                    if 8 in rates.get("pinned", {})
                    else ""
                )
                + (f", sqlq {rates['sqlq'][8] / one:.2f}×" if 8 in rates.get("sqlq", {}) else ""),
            )
        )
    normal = rates.get("normal", {}).get(1)
    if normal:
        floor = rates.get("fsync", {}).get(1)
        best = (
            ""
            if floor is None
            else "; with this engine's CPU per step and the least a SQLite commit takes on"
            f" this disk, the most it could reach: {floor / (normal + floor):.2f}× (row 7f)"
        )
        rows.append(
            Row(
                name="7t. one at a time vs its own synchronous=NORMAL",
                ours=one,
                baseline=normal,
                unit="steps/s",
                ratio=one / normal,
                target="≥ 0.75×",
                met=one / normal >= 0.75,
                note="NORMAL is not durable per step: the distance is what the fsyncs cost" + best,
            )
        )
        if floor is not None:
            # A step that must be on disk before the next costs at least NORMAL's step plus
            # its share of the commits: 1 / (1 / normal + 1 / floor) steps/s.
            rows.append(
                Row(
                    name="7f. the floor: NORMAL's step plus the least a SQLite commit takes,"
                    " vs NORMAL",
                    ours=1 / (1 / normal + 1 / floor),
                    baseline=normal,
                    unit="steps/s",
                    ratio=floor / (normal + floor),
                    target="(informational)",
                    note=f"NORMAL's step {1e6 / normal:.0f} µs; the disk's part per step"
                    f" {1e6 / floor:.0f} µs: {STEPS + 1} commits per {STEPS}-step workflow (its"
                    " start and each step), each one WAL frame written and fdatasync'ed,"
                    f" {1e6 / floor * STEPS / (STEPS + 1):.0f} µs. Only a slower step or a"
                    " faster disk moves this ratio up; the engine"
                    " commits 7 times per workflow, several WAL frames and one fdatasync each",
                )
            )
    return rows


def levels_arg(text: str) -> tuple[int, ...]:
    """`--levels`: whole numbers of workflows in flight, at least 1 each."""
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give workflows in flight as whole numbers of 1 or more, e.g. 1,8"
        )
    return tuple(sorted(set(levels)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--levels", type=levels_arg, help="comma-separated workflows in flight (default 1,2,4,8,32)"
    )
    parser.add_argument("--no-dbos", action="store_true")
    parser.add_argument("--no-rq", action="store_true")
    args = parser.parse_args()
    mode: Mode = "quick" if args.quick else "full"
    for row in run(mode, args.levels, dbos=not args.no_dbos, rq=not args.no_rq):
        ours = "–" if row.ours is None else f"{row.ours:,.0f}"
        base = "–" if row.baseline is None else f"{row.baseline:,.0f}"
        ratio = "–" if row.ratio is None else f"{row.ratio:.2f}×"
        print(f"{row.name}: {ours} vs {base} ({ratio}) {row.target} {row.note}", flush=True)


if __name__ == "__main__":
    main()
