"""The crash worker process of the crash matrix: a separate Python process that runs a saga's
jobs with a probe at every boundary of a job, records the boundaries it passes, and kills
itself with SIGKILL at the one it was told to.

Boundaries (the Engine's probe points): `before_action` (the attempt is claimed and saved, the
handler has not run), `after_action` (the handler ran, its result is not saved),
`after_save` (an outcome is saved, the jobs it enqueues are not enqueued yet; a signal's save
too), `before_compensation` and `after_compensation` (the same two points around an undo).

Time and people: when every open workflow only waits (for a signal, a wait's timeout, a
sleep), the process sends the signals its scenario gives for the steps that wait (`signals`:
step name -> payload), else moves its clock on to the earliest due time and runs a recovery
pass, which puts back the timers now due (one the killed worker enqueued is lost with it). The
clock's lead is kept in a file, so the cell's next process goes on from the same time.

A process, not a thread: only a real process dies without cleanup, flush or `finally`, as a
machine that loses power does. It runs `python -m statesaga.verify.crashcheck SPEC`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...models import StepStatus, WorkflowState, WorkflowStatus
from ...ports import Job
from ...vocabulary import STEP_BUSY, WORKFLOW_ENDED
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
FINAL = WORKFLOW_ENDED


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
class SkippingClock:
    """Wall time plus a lead the process moves on to due timers instead of sleeping until
    them (a three-day approval timeout is checked in no time), kept in `path` so every
    process of a cell shares one time: stored due times and heartbeats stay consistent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lead = timedelta(seconds=float(path.read_text())) if path.exists() else timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.lead

    def skip_to(self, when: datetime) -> None:
        gap = when - self.now()
        if gap > timedelta():
            self.lead += gap
            self.path.write_text(str(self.lead.total_seconds()))


def worker_main(spec: dict[str, Any]) -> int:
    """One crash-worker process: optionally recover, optionally start the saga, then run jobs
    (sending the scenario's signals, skipping to due timers) until every workflow of the store
    has ended, or only waits for a signal nobody sends."""
    from ...app import EngineOptions
    from ...definitions.load import load_definition
    from ...runtime.recovery import Recovery

    kill_at = tuple(spec["kill_at"]) if spec.get("kill_at") else None
    record = Path(spec["record"]) if spec.get("record") else None
    clock = SkippingClock(Path(spec["clock"])) if spec.get("clock") else None
    probe = make_probe(kill_at, record)
    # The saga's own step lifecycle (`step_lifecycle:`), in every process of the cell.
    saga = load_definition(spec["saga"]) if spec.get("saga") else None
    engine = EngineOptions(
        store=spec["store"],
        queue=spec["queue"],
        # The operator's modules, or the allowed hints (matrix._with_handlers), as a worker's.
        handlers=spec["handlers"],
        allow="listed",
        worker=f"crash-worker-{os.getpid()}",
        probe=probe,
        clock=clock,
        definition=saga,
    ).build()
    store = engine.store
    driver = None
    if spec.get("plan_run") is not None:
        from .plans import PLAN_RECORD, PlanDriver

        driver = PlanDriver(engine, spec["plan_run"], Path(spec["celldir"]) / PLAN_RECORD)
    if spec.get("recover"):
        Recovery(engine, timeout=0.0).run_once()
    if spec.get("plan"):
        from ...plans import start_plan

        start_plan(engine, spec["plan"], by="check-crashes")
    elif spec.get("definition"):
        definition = load_definition(spec["definition"])
        if spec["handlers"]:
            definition.spec = definition.spec.model_copy(update={"handlers": spec["handlers"]})
        engine.start(definition, spec.get("input") or {})
    deadline = time.monotonic() + float(spec.get("deadline", 60))
    signals: dict[str, Any] = spec.get("signals") or {}

    def now() -> datetime:
        return engine.clock.now()

    def done() -> bool:
        workflows = store.list()
        if driver is not None and any(driver.revision_due(wf) for wf in workflows):
            return True  # between two jobs: the revision races the jobs still queued
        return all(wf.status in FINAL or only_waits(wf, now()) for wf in workflows)

    seen: list[int] = []
    while time.monotonic() < deadline:
        _run_jobs(engine, done, deadline)
        if driver is not None:
            to_revise = [wf for wf in store.list() if driver.revision_due(wf)]
            if to_revise and driver.revise(to_revise[0], probe):
                continue
        waiting = [wf for wf in store.list() if wf.status not in FINAL]
        if not waiting or not all(only_waits(wf, now()) for wf in waiting):
            break  # all ended, or the deadline passed with work left (the checks say so)
        revisions = [wf.revision for wf in waiting]
        if revisions == seen:
            break  # the last skip moved nothing on: judged as it is
        seen = revisions
        if driver is not None and any(driver.answer(wf, probe) for wf in waiting):
            continue
        if any(_send_signals(engine, wf, signals, probe) for wf in waiting):
            continue
        due = min((t for wf in waiting for t in _timers(wf)), default=None)
        if due is None or clock is None:
            break  # only a signal nobody sends moves them on: judged as they are
        clock.skip_to(due)
        Recovery(engine, timeout=0.0).run_once()  # puts back the timers now due
    store.close()
    return 0


def only_waits(wf: WorkflowState, now: datetime) -> bool:
    """Running with no job of it queued or running and no timer due: only a signal or the
    passing of time moves it on."""
    return (
        wf.status is WorkflowStatus.RUNNING
        and not any(s.status in STEP_BUSY for s in wf.steps)
        and any(s.status is StepStatus.WAITING for s in wf.steps)
        and all(t > now for t in _timers(wf))
    )


def _timers(wf: WorkflowState) -> list[datetime]:
    return [
        s.next_attempt_at
        for s in wf.steps
        if s.status is StepStatus.WAITING and s.next_attempt_at is not None
    ]


def _send_signals(
    engine: Engine, wf: WorkflowState, signals: dict[str, Any], probe: Callable[[str, Any], None]
) -> bool:
    """Send the scenario's signal to each step of `wf` that waits for one; True if any was
    sent. The signal's save is a boundary like a job's (`after_save`: saved, the jobs it sets
    going not enqueued yet)."""
    sent = False
    for step in wf.steps:
        if step.kind != "wait" or step.status is not StepStatus.WAITING or step.signal is None:
            continue
        if step.name not in signals:
            continue
        at = Job(kind="step", workflow_id=wf.id, step=step.name, attempt=step.attempts)
        with BoundaryBeforeEnqueue(engine, functools.partial(probe, "after_save", at)):
            engine.signal(wf.id, step.signal, signals[step.name], by="check-crashes")
        sent = True
    return sent


class BoundaryBeforeEnqueue:
    """Call `boundary` between the save of an operator's command (a signal) and the first job
    it enqueues, or after the command when it enqueues none: the point `after_save` marks for
    a job. The engine probes only jobs' saves; a command's outward actions run after its save
    in the same order (Kernel.after_commit), so the queue's enqueue is where its save ended."""

    def __init__(self, engine: Engine, boundary: Callable[[], None]) -> None:
        self.queue = engine.queue
        self.boundary: Callable[[], None] | None = boundary

    def _fire(self) -> None:
        if self.boundary is not None:
            boundary, self.boundary = self.boundary, None
            boundary()

    def __enter__(self) -> None:
        enqueue = self.queue.enqueue

        def enqueue_after_the_boundary(job: Job, delay: float = 0.0) -> None:
            self._fire()
            enqueue(job, delay)

        self.queue.enqueue = enqueue_after_the_boundary  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        del self.queue.enqueue  # the instance attribute: the class's method again
        if exc[0] is None:
            self._fire()


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


__all__ = [
    "BOUNDARIES",
    "FINAL",
    "BoundaryEvent",
    "SkippingClock",
    "make_probe",
    "only_waits",
    "run_worker",
    "worker_main",
]
