"""SQLite store latency: get/save p50 with synchronous=FULL (the default) against NORMAL.

    python benchmarks/store_latency.py [--rounds 500] [--dir DIR]

The database goes in DIR (default: a fresh directory under the current one, so the numbers
are those of the disk you run on; a tmpfs would make fsync free). Prints p50/p95 per
operation and the FULL/NORMAL ratio of the save p50, the cost of durability per step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.models import CompensationAction, SagaStep, StepStatus, WorkflowState


def five_step_workflow() -> WorkflowState:
    steps = [
        SagaStep(
            id=f"STEP-{i}",
            name=f"step{i}",
            action_type=f"bench.step{i}",
            params={"amount": 100 * i, "currency": "EUR"},
            status=StepStatus.COMPLETED,
            attempts=1,
            result={"confirmation": f"C-{i:06d}"},
            compensation=CompensationAction(step_id=f"STEP-{i}", action_type=f"bench.undo{i}"),
        )
        for i in range(5)
    ]
    return WorkflowState(name="bench", input={"customer": "c-1"}, steps=steps)


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def measure(directory: Path, synchronous: str, rounds: int) -> dict[str, list[float]]:
    path = directory / f"{synchronous}.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}?synchronous={synchronous}")
    wf = five_step_workflow()
    store.create(wf)
    timings: dict[str, list[float]] = {"get": [], "save": []}
    for i in range(rounds):
        t0 = time.perf_counter()
        wf = store.get(wf.id)
        t1 = time.perf_counter()
        wf.input["i"] = i
        store.save(wf)
        t2 = time.perf_counter()
        timings["get"].append(t1 - t0)
        timings["save"].append(t2 - t1)
    store.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statesaga-bench-", dir=args.dir) as tmp:
        results = {mode: measure(Path(tmp), mode, args.rounds) for mode in ("full", "normal")}
    p50: dict[tuple[str, str], float] = {}
    for mode, timings in results.items():
        for op, samples in timings.items():
            p50[mode, op] = statistics.median(samples)
            print(
                f"{mode:>6} {op:<4} p50 {p50[mode, op] * 1e3:7.3f} ms"
                f"  p95 {percentile(samples, 95) * 1e3:7.3f} ms"
            )
    print(f"ratio FULL/NORMAL save p50: {p50['full', 'save'] / p50['normal', 'save']:.2f}")
    print(f"ratio FULL/NORMAL get  p50: {p50['full', 'get'] / p50['normal', 'get']:.2f}")


if __name__ == "__main__":
    main()
