"""Row 4: scale. Latency of the store's reads with many stored workflows, and a worker's memory.

Latency: N stored five-step workflows (100,000; fewer in quick mode) in one SQLite file, then
p50/p99 of `get(id)`, `list(session_id=...)` (ten workflows per session) and the recoverable
scan `list_stale(before, ACTIVE)` (ten stale RUNNING workflows among N finished ones), each
through a fresh `SQLiteStore` with its defaults. Filling uses the store's own `create` with
synchronous=NORMAL: filling is setup, and reads do not depend on the synchronous mode.

Memory: a subprocess runs workflows on SQLite + inline and reports its RSS after M and after
10·M workflows (1,000 and 10,000; fewer in quick mode). The store there is synchronous=NORMAL
so that 10,000 workflows take seconds, not fsync-bound minutes; memory does not depend on it.

    python -m benchmarks.scale [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.engine import Engine
from statesaga.models import WorkflowStatus
from statesaga.vocabulary import WORKFLOW_IN_FLIGHT as ACTIVE_WORKFLOW

from ._common import Mode, Row, noop_definition, noop_registry, percentile, rss_bytes
from .embedded import RESULTS
from .store_latency import five_step_workflow

PER_SESSION = 10
STALE = 10


def fill(path: Path, n: int) -> list[str]:
    store = SQLiteStore(path, synchronous="normal")
    template = five_step_workflow()
    long_ago = datetime.now(UTC) - timedelta(days=1)
    ids = []
    for i in range(n):
        stale = i % max(1, n // STALE) == 0
        wf = template.model_copy(
            update={
                "id": f"WF-BENCH-{i:08d}",
                "session_id": f"S-{i // PER_SESSION:07d}",
                "status": WorkflowStatus.RUNNING if stale else WorkflowStatus.COMPLETED,
                "heartbeat_at": long_ago if stale else None,
            }
        )
        store.create(wf)
        ids.append(wf.id)
    store.close()
    return ids


def _time(op: Callable[[], Any], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        op()
        out.append(time.perf_counter() - t0)
    return out


def latency(path: Path, ids: list[str], samples: int) -> dict[str, dict[str, float]]:
    store = SQLiteStore(path)
    rng = random.Random(7)
    sessions = sorted({f"S-{i // PER_SESSION:07d}" for i in range(len(ids))})
    cutoff = datetime.now(UTC) - timedelta(minutes=5)
    ops: dict[str, Callable[[], Any]] = {
        "get": lambda: store.get(rng.choice(ids)),
        "list_by_session": lambda: store.list(session_id=rng.choice(sessions)),
        "list_stale": lambda: store.list_stale(cutoff, ACTIVE_WORKFLOW),
    }
    found = len(store.list_stale(cutoff, ACTIVE_WORKFLOW))
    result: dict[str, dict[str, float]] = {}
    for name, op in ops.items():
        _time(op, 20)  # warm the page cache and the statement cache
        t = _time(op, samples)
        result[name] = {"p50_ms": percentile(t, 50) * 1e3, "p99_ms": percentile(t, 99) * 1e3}
    result["list_stale"]["returned"] = found
    result["list_by_session"]["returned"] = PER_SESSION
    store.close()
    return result


def memory_child(db: str, first: int, then: int) -> None:
    """Run `first` workflows, report RSS, run up to `then`, report RSS (one JSON line)."""
    engine = Engine(
        SQLiteStore(db, synchronous="normal"), InlineQueue(), noop_registry(), heartbeat_interval=0
    )
    definition = noop_definition()
    out: dict[str, int] = {}
    for done in range(1, then + 1):
        engine.run(definition)
        if done in (first, then):
            gc.collect()
            out[str(done)] = rss_bytes()
    engine.store.close()
    print(json.dumps(out))


def memory(directory: Path, first: int, then: int) -> dict[str, int]:
    cmd = [sys.executable, "-m", "benchmarks.scale", "--memory-child", str(directory / "m.db")]
    cmd += [str(first), str(then)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
    )
    data: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def run(mode: Mode, directory: Path | None = None) -> list[Row]:
    n = {"smoke": 300, "quick": 8_000, "full": 100_000}[mode]
    samples = {"smoke": 50, "quick": 500, "full": 3000}[mode]
    first, then = {"smoke": (10, 60), "quick": (100, 400), "full": (1000, 10_000)}[mode]
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale-", dir=base) as tmp:
        path = Path(tmp) / "scale.db"
        t0 = time.perf_counter()
        ids = fill(path, n)
        fill_s = time.perf_counter() - t0
        size = path.stat().st_size + (
            path.with_name(path.name + "-wal").stat().st_size
            if path.with_name(path.name + "-wal").exists()
            else 0
        )
        lat = latency(path, ids, samples)
        mem = memory(Path(tmp), first, then)
    reduced = "" if mode == "full" else f" ({mode} mode: {n:,} stored, not 100,000)"
    rows = []
    for op, label in (
        ("get", "get"),
        ("list_by_session", f"list(session_id) → {PER_SESSION}"),
        ("list_stale", f"list_stale → {lat['list_stale']['returned']:.0f}"),
    ):
        p50, p99 = lat[op]["p50_ms"], lat[op]["p99_ms"]
        rows.append(
            Row(
                name=f"4. scale: {label} with {n:,} stored",
                ours=p50,
                baseline=p99,
                unit="ms p50 / p99",
                target="p50 < 2 ms",
                met=p50 < 2.0,
                note=reduced.strip(),
                details={"stored": n, "fill_seconds": fill_s, "db_bytes": size, **lat[op]},
            )
        )
    a, b = mem[str(first)], mem[str(then)]
    growth = b / a
    rows.append(
        Row(
            name=f"4. scale: worker RSS after {then:,} vs {first:,} workflows",
            ours=b / 2**20,
            baseline=a / 2**20,
            unit="MiB",
            ratio=growth,
            target="flat (≤ 1.1×)",
            met=growth <= 1.1,
            note=reduced.strip(),
            details={"rss_bytes": mem},
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", nargs=3, metavar=("DB", "FIRST", "THEN"))
    args = parser.parse_args()
    if args.memory_child:
        db, first, then = args.memory_child
        memory_child(db, int(first), int(then))
        return
    for row in run("quick" if args.quick else "full"):
        print(row.name, row.ours, row.baseline, row.unit, row.ratio, row.note)


if __name__ == "__main__":
    main()
