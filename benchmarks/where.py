"""Where a step's time goes on the embedded default as work in flight grows (issue 33).

    python -m benchmarks.where [--workflows N] [--layouts 1x1,2x4]

Each layout PxT runs P processes on one SQLite file (synchronous=FULL), each pinned to a CPU
of its own (statesaga.runtime.cpu) with T workflows in flight on threads, all starting at
once. Per layout: steps/s, CPU per step (user + system, `os.times()` of every process), how
many of the machine's cores were busy, writes per transaction of the group commit, and the
share of the wall each process spent waiting for another process's write lock and in its own
COMMIT (fsync included), from timing `take_write_lock` and the group commit's `_commit`.
Figures, not a pass/fail: the notes of issue 33 quote them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from statesaga.runtime.cpu import cpu_for, pin_to_cpu, usable_cpus

from .embedded import RESULTS, Statesaga

STEPS = 5  # the saga of benchmarks._common: five sequential no-op steps


def _process(db: str, threads: int, n: int, cpu: int, start: float, out: Any) -> None:
    from statesaga.adapters.stores import _group_commit as gc

    spent = {"lock": 0.0, "commit": 0.0}
    take, commit = gc.take_write_lock, gc.GroupCommit._commit

    def timed_take(conn: Any, timeout: float) -> None:
        t = time.perf_counter()
        take(conn, timeout)
        spent["lock"] += time.perf_counter() - t

    def timed_commit(self: Any, group: Any, conn: Any) -> None:
        t = time.perf_counter()
        commit(self, group, conn)
        spent["commit"] += time.perf_counter() - t

    gc.take_write_lock = timed_take  # type: ignore[assignment]
    gc.GroupCommit._commit = timed_commit  # type: ignore[method-assign]
    pin_to_cpu(cpu)
    side = Statesaga(Path(db), in_flight=threads)
    side.block(max(threads, 10))  # warm-up
    group = side.store.group_commit
    transactions, writes = group.transactions, group.writes
    spent.update(lock=0.0, commit=0.0)
    while time.time() < start:
        time.sleep(0.001)
    c0, t0 = os.times(), time.time()
    side.block(n)
    t1, c1 = time.time(), os.times()
    out.put(
        {
            "t0": t0,
            "t1": t1,
            "cpu": (c1.user - c0.user) + (c1.system - c0.system),
            "transactions": group.transactions - transactions,
            "writes": group.writes - writes,
            **spent,
        }
    )
    side.close()


def layout(processes: int, threads: int, n: int, directory: Path) -> dict[str, Any]:
    db = directory / f"where-{processes}x{threads}-{time.time_ns()}.db"
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    start = time.time() + 5  # every process warmed up and waiting
    procs = [
        ctx.Process(target=_process, args=(str(db), threads, n, cpu_for(i), start, out))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    steps = processes * n * STEPS
    cpu = sum(r["cpu"] for r in results)
    return {
        "layout": f"{processes}x{threads}",
        "steps_per_s": steps / wall,
        "cpu_ms_per_step": cpu / steps * 1e3,
        "cores_busy": cpu / wall,
        "writes_per_transaction": sum(r["writes"] for r in results)
        / max(1, sum(r["transactions"] for r in results)),
        "lock_wait_share": [round(r["lock"] / wall, 2) for r in results],
        "commit_share": [round(r["commit"] / wall, 2) for r in results],
    }


def layouts_arg(text: str) -> list[tuple[int, int]]:
    """`--layouts`: PxT items, P processes and T threads each, both 1 or more."""
    try:
        layouts = [(int(p), int(t)) for p, t in (item.split("x") for item in text.split(","))]
    except ValueError:
        layouts = []
    if not layouts or min(min(pair) for pair in layouts) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give processes x threads, each 1 or more, e.g. 1x1,2x4"
        )
    return layouts


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of 1 or more")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=positive, default=300, help="per process")
    parser.add_argument("--layouts", type=layouts_arg, default="1x1,2x4")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="where-", dir=RESULTS) as tmp:  # a real disk
        for p, t in args.layouts:
            _show(layout(p, t, args.workflows, Path(tmp)))


def _show(r: dict[str, Any]) -> None:
    cores = len(usable_cpus())
    print(
        f"{r['layout']}: {r['steps_per_s']:,.0f} steps/s; CPU {r['cpu_ms_per_step']:.3f} ms"
        f"/step; cores busy {r['cores_busy']:.2f} of {cores}; "
        f"{r['writes_per_transaction']:.2f} writes/transaction; per process, share of the "
        f"wall waiting for the write lock {r['lock_wait_share']}, in COMMIT (fsync "
        f"included) {r['commit_share']}"
    )


if __name__ == "__main__":
    main()
