"""The crash worker process of the crash matrix: a separate Python process that runs a saga's
jobs with a probe at every boundary of a job, records the boundaries it passes, and kills
itself with SIGKILL at the one it was told to.

Boundaries (the Engine's probe points): `before_action` (the attempt is claimed and saved, the
handler has not run), `after_action` (the handler ran, its result is not saved),
`after_save` (an outcome is saved, the jobs it enqueues are not enqueued yet),
`before_compensation` and `after_compensation` (the same two points around an undo).

A process, not a thread: only a real process dies without cleanup, flush or `finally`, as a
machine that loses power does. It runs `python -m statesaga.verify.crashcheck SPEC`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...models import WorkflowStatus
from .ledger import LEDGER_ENV, LEDGER_SCOPE_ENV

if TYPE_CHECKING:
    from ...engine import Engine

BOUNDARIES = (
    "before_action",
    "after_action",
    "after_save",
    "before_compensation",
    "after_compensation",
)

#: Where a workflow's run ends: a crash worker stops once every workflow is in one.
FINAL = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
    }
)


# -- the probe a crash worker installs ----------------------------------------------------
@dataclass(frozen=True)
class BoundaryEvent:
    """The nth time a run passed a boundary, and the job that was at it."""

    boundary: str
    n: int
    kind: str
    step: str
    attempt: int

    @property
    def label(self) -> str:
        verb = "undo " if self.kind == "compensation" else ""
        return f"{verb}{self.step}#{self.attempt}"


def make_probe(
    kill_at: tuple[str, int] | None = None, record: Path | None = None
) -> Callable[[str, Any], None]:
    """A probe that appends each boundary to `record` and SIGKILLs this process at the nth
    occurrence of a boundary (no cleanup, no flush: the process just vanishes)."""
    counts: Counter[str] = Counter()

    def probe(boundary: str, job: Any) -> None:
        counts[boundary] += 1
        n = counts[boundary]
        if record is not None:
            event = BoundaryEvent(boundary, n, job.kind, job.step, job.attempt)
            with open(record, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(event)) + "\n")
        if kill_at is not None and (boundary, n) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return probe


def read_events(record: Path) -> list[BoundaryEvent]:
    """The boundaries a run recorded (none when it recorded nothing)."""
    if not record.exists():
        return []
    return [BoundaryEvent(**json.loads(line)) for line in record.read_text().splitlines()]


# -- inside the process --------------------------------------------------------------------
def worker_main(spec: dict[str, Any]) -> int:
    """One crash-worker process: optionally recover, optionally start the saga, then run jobs
    until every workflow of the store is final (or the queue has nothing left)."""
    from ...app import EngineOptions
    from ...definition import load_definition
    from ...runtime.recovery import Recovery

    kill_at = tuple(spec["kill_at"]) if spec.get("kill_at") else None
    record = Path(spec["record"]) if spec.get("record") else None
    engine = EngineOptions(
        store=spec["store"],
        queue=spec["queue"],
        # The operator's modules, or the allowed hints (matrix._with_handlers), as a worker's.
        handlers=spec["handlers"],
        allow="listed",
        worker=f"crash-worker-{os.getpid()}",
        probe=make_probe(kill_at, record),
    ).build()
    store = engine.store
    if spec.get("recover"):
        Recovery(engine, timeout=0.0).run_once()
    if spec.get("definition"):
        definition = load_definition(spec["definition"])
        if spec["handlers"]:
            definition.spec = definition.spec.model_copy(update={"handlers": spec["handlers"]})
        engine.start(definition, spec.get("input") or {})
    deadline = time.monotonic() + float(spec.get("deadline", 60))

    def done() -> bool:
        return all(wf.status in FINAL for wf in store.list())

    _run_jobs(engine, done, deadline)
    store.close()
    return 0


def _run_jobs(engine: Engine, done: Callable[[], bool], deadline: float) -> None:
    """Run the engine's jobs in this process until `done()` or the deadline.

    An in-process queue drains itself. A queue served by workers (`rq://`) is served here in
    burst passes, as `statesaga worker --burst --with-scheduler` would, each pass moving the
    delayed jobs (retry backoffs) that fell due.
    """
    from ...ports import ServeOptions, WorkerQueue
    from ...worker import worker_name

    queue = engine.queue
    if not isinstance(queue, WorkerQueue):
        queue.drain(done, max(deadline - time.monotonic(), 0.0))
        return
    options = ServeOptions(name=worker_name(), burst=True, with_scheduler=True, log_level="WARNING")
    while not done() and time.monotonic() < deadline:
        queue.serve(engine.run_job, options)
        if not done():
            time.sleep(0.1)


# -- from the matrix -----------------------------------------------------------------------
def run_worker(
    celldir: Path, spec: dict[str, Any], name: str, *, deadline: float, ledger_scope: str
) -> int:
    """Run one crash worker process for a cell to its end (or its death); its exit code, which
    is -SIGKILL when it killed itself at its boundary. Its output goes to `celldir/NAME.log`."""
    env = dict(os.environ)
    env[LEDGER_ENV] = str(celldir / "ledger.jsonl")
    env[LEDGER_SCOPE_ENV] = ledger_scope
    with open(celldir / f"{name}.log", "wb") as log:
        proc = subprocess.run(
            # -P: `-m` would put the working directory first on sys.path, where a planted
            # `redis.py` would shadow the library; handler modules are found there last.
            [sys.executable, "-P", "-m", "statesaga.verify.crashcheck", json.dumps(spec)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=deadline + 30,
            check=False,
        )
    return proc.returncode


__all__ = ["BOUNDARIES", "FINAL", "BoundaryEvent", "make_probe", "run_worker", "worker_main"]
