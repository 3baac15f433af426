"""Row 5: store reads and writes per step, counted (not timed), against the design's minimum.

A counting proxy wraps the SQLite store and the inline queue; the queue's runner is wrapped
too, so every store call is attributed to where it happens: inside a job (the claim and the
settle of a step), in `start` (creating the workflow), or in `engine.run`'s wait loop (which
re-reads the document to see whether the workflow has ended, an artefact of waiting in-process).

The design's minimum per step: 1 read (load the document) + 2 writes (the claim, which saves
EXECUTING with the attempt token, and the settle, the step's outcome) + 1 enqueue (the next
step's job). With eager dispatch (the default) the settle also claims the next step and the
same process runs it: per workflow, one read and one claim for the first step, then one save
per step and no enqueue; the second row counts every step through the queue (eager=False).
Redis commands per step belong to the RQ path (row 3, benchmarks/rq_throughput.py).

    python -m benchmarks.roundtrips [--workflows N]
"""

from __future__ import annotations

import argparse
import builtins
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import WorkflowDefinition, load_definition
from statesaga.engine import Engine
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.ports import Job, JobRunner, Queue, Store

from ._common import STEPS, Mode, Row, noop_definition, noop_registry
from .embedded import RESULTS

READS = ("get", "list", "list_stale")
WRITES = ("create", "save", "heartbeat")


class CountingStore(Store):
    """A Store that counts each call by (where, operation) and forwards it."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.where = "outside"
        self.calls: Counter[tuple[str, str]] = Counter()

    def _count(self, op: str) -> None:
        self.calls[self.where, op] += 1

    def initialize(self) -> None:
        self.inner.initialize()

    def create(self, wf: WorkflowState) -> None:
        self._count("create")
        self.inner.create(wf)

    def get(self, workflow_id: str) -> WorkflowState:
        self._count("get")
        return self.inner.get(workflow_id)

    def save(self, wf: WorkflowState) -> None:
        self._count("save")
        self.inner.save(wf)

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        self._count("heartbeat")
        self.inner.heartbeat(workflow_id, at)

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowState]:
        self._count("list")
        found: builtins.list[WorkflowState] = self.inner.list(
            session_id=session_id, status=status, limit=limit
        )
        return found

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> builtins.list[WorkflowState]:
        self._count("list_stale")
        stale: builtins.list[WorkflowState] = self.inner.list_stale(before, statuses)
        return stale

    def close(self) -> None:
        self.inner.close()


class CountingQueue(Queue):
    """An inline queue that counts enqueues and marks the store's calls made inside jobs."""

    def __init__(self, inner: InlineQueue, store: CountingStore) -> None:
        self.inner = inner
        self.store = store
        self.enqueued = 0
        self.jobs: Counter[str] = Counter()

    def bind(self, runner: JobRunner) -> None:
        def counted(job: Job) -> None:
            self.jobs[job.kind] += 1
            previous, self.store.where = self.store.where, "job"
            try:
                runner(job)
            finally:
                self.store.where = previous

        self.inner.bind(counted)

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        self.enqueued += 1
        self.inner.enqueue(job, delay)

    def drain(self, until: Callable[[], bool], timeout: float | None = None) -> None:
        previous, self.store.where = self.store.where, "wait"
        try:
            self.inner.drain(until, timeout)
        finally:
            self.store.where = previous

    def close(self) -> None:
        self.inner.close()


def count(
    directory: Path,
    workflows: int,
    eager: bool = True,
    definition: WorkflowDefinition | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    name = name or ("roundtrips.db" if eager else "roundtrips-queued.db")
    store = CountingStore(SQLiteStore(directory / name, synchronous="normal"))
    queue = CountingQueue(InlineQueue(), store)
    engine = Engine(store, queue, noop_registry(), heartbeat_interval=0, eager=eager)
    definition = definition or noop_definition()
    for _ in range(workflows):
        store.where = "start"
        wf = engine.start(definition)
        store.where = "outside"
        engine.wait(wf.id)
    store.close()
    steps = workflows * STEPS

    def per_step(where: str, ops: tuple[str, ...]) -> float:
        return sum(n for (w, op), n in store.calls.items() if w == where and op in ops) / steps

    return {
        "workflows": workflows,
        "steps": steps,
        "calls": {f"{w}.{op}": n for (w, op), n in sorted(store.calls.items())},
        "job_reads_per_step": per_step("job", READS),
        "job_writes_per_step": per_step("job", WRITES),
        "start_writes_per_step": per_step("start", WRITES),
        "wait_reads_per_step": per_step("wait", READS) + per_step("outside", READS),
        "enqueues_per_step": queue.enqueued / steps,
        "jobs_per_step": sum(queue.jobs.values()) / steps,
    }


#: Five no-op steps of each kind, for the started-marker rows (5c): the step kind decides
#: whether the settle of the step before claims it (no write of its own) or holds it for its
#: own claim right before the call (claimed is not started; one write more).
MARKER_KINDS: dict[str, dict[str, Any]] = {
    "with a compensation": {"compensation": "undo"},
    "without one, before any pivot": {},
    "read_only": {"read_only": True},
    "at or past the pivot": {},  # s0 is the pivot, the others depend on it
    "under forward_retry": {},
}


def marker_definition(kind: str) -> WorkflowDefinition:
    steps = [{"name": f"s{i}", "action": f"noop{i}", **MARKER_KINDS[kind]} for i in range(STEPS)]
    if kind == "at or past the pivot":
        steps[0]["pivot"] = True
    saga: dict[str, Any] = {"workflow": "bench_marker", "steps": steps}
    if kind == "under forward_retry":
        saga["strategy"] = "forward_retry"
    return load_definition(saga)


def marker_rows(directory: Path, workflows: int) -> list[Row]:
    """Rows 5c: the store writes per step a started-marker costs, by kind of step. Counted,
    not timed: a step claimed by the settle of the one before costs one save (its settle); a
    held one two (its own claim, then its settle). Steps 2 to 5 run eagerly; the first is
    claimed by its queue job whatever its kind, so the extra is counted over those four."""
    base = count(directory, workflows, definition=marker_definition("with a compensation"),
                 name="marker-base.db")  # fmt: skip
    rows = []
    for i, kind in enumerate(MARKER_KINDS):
        c = count(directory, workflows, definition=marker_definition(kind), name=f"marker{i}.db")
        extra = (c["job_writes_per_step"] - base["job_writes_per_step"]) * STEPS / (STEPS - 1)
        rows.append(
            Row(
                name=f"5c. started-marker: extra store writes per step, a step {kind}",
                ours=extra,
                baseline=0.0,
                unit="writes/step",
                target="0 where a lost attempt is harmless; 1 (its claim) where it could halt",
                met=extra <= 1 + 1e-9,
                note=f"{c['job_writes_per_step']:.2f} writes and {c['job_reads_per_step']:.2f}"
                f" reads per step in jobs (a saga of 5 such steps, {workflows} workflows)",
                details=c,
            )
        )
    return rows


def run(mode: Mode, directory: Path | None = None) -> list[Row]:
    workflows = {"smoke": 3, "quick": 50, "full": 200}[mode]
    base = directory or RESULTS
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="roundtrips-", dir=base) as tmp:
        counts = {eager: count(Path(tmp), workflows, eager) for eager in (True, False)}
        markers = marker_rows(Path(tmp), workflows)
    minimum = 1 + 2 + 1
    rows = []
    for eager, c in counts.items():
        reads, writes = c["job_reads_per_step"], c["job_writes_per_step"]
        ours = reads + writes + c["enqueues_per_step"]
        rows.append(
            Row(
                name="5. round trips per step (store, inside jobs) + enqueues"
                + ("" if eager else ", every step through the queue (eager=False)"),
                ours=ours,
                baseline=float(minimum),
                unit="calls/step",
                ratio=ours / minimum,
                target="≤ design minimum: 1 read + 2 writes + 1 enqueue",
                met=ours <= minimum + 1e-9 and reads <= 1 and writes <= 2,
                note=(
                    f"{reads:.2f} reads + {writes:.2f} writes + {c['enqueues_per_step']:.2f}"
                    f" enqueues per step; start adds {c['start_writes_per_step']:.2f} writes/step;"
                    f" engine.run's wait loop adds {c['wait_reads_per_step']:.2f} reads/step"
                ),
                details=c,
            )
        )
    return rows + markers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = count(Path(tmp), args.workflows)
    for key, value in c.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
