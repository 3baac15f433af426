"""The crash matrix: run a saga again and again, SIGKILL the worker process at each boundary of
a job in turn, recover, and check that nothing was lost or applied twice.

Boundaries (the Engine's probe points): `before_action` (the attempt is claimed and saved, the
handler has not run), `after_action` (the handler ran, its result is not saved),
`after_save` (an outcome is saved, the jobs it enqueues are not enqueued yet),
`before_compensation` and `after_compensation` (the same two points around an undo).

For each scenario (a definition and an input) a first run records every boundary the jobs
pass; then every recorded boundary is one cell: a fresh store, a worker **process** that kills
itself with SIGKILL when it reaches that boundary, then recovery (resume, heartbeat timeout 0:
the worker is known dead) and a fresh worker, and the checks:

- the workflow converges to the outcome the scenario expects (`Scenario.expect`, e.g. FAILED
  for a failure after the pivot), else to the one the uninterrupted run reached (COMPLETED or
  COMPENSATED), and nothing is left open or recoverable (no workflow stuck). A different
  outcome is correct when a lost attempt was a step's last one: it counted as an attempt;
- the side-effect ledger (handlers record what they do through `Ledger`) shows every action
  applied at most once, undone at most once, never undone without having been applied; on a
  COMPLETED workflow every ledgered action is applied, on a COMPENSATED one none is left.

Queues: `inline://` (the embedded default: the worker process itself drains the jobs; what was
queued dies with it, and recovery re-enqueues it from the store) or `rq://…` (RQ on Redis,
served by RQ SimpleWorkers built like `statesaga worker`). Stores: any shared one (a SQLite
file by default, one per cell).

Use it from the command line (`statesaga check-crashes trip.yaml --input '{...}'`) or from a
test: `results = check_crashes([Scenario(...)]); assert all(r.ok for r in results)`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ..context import StepContext
from ..models import StepStatus, WorkflowState, WorkflowStatus

BOUNDARIES = (
    "before_action",
    "after_action",
    "after_save",
    "before_compensation",
    "after_compensation",
)
#: Where handlers write their side-effect ledger (a JSON-lines file).
LEDGER_ENV = "STATESAGA_LEDGER"
#: `step` (default) or `attempt`: what the ledger's simulated service deduplicates on.
LEDGER_SCOPE_ENV = "STATESAGA_LEDGER_SCOPE"

_FINAL = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.COMPENSATED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
    }
)


# -- the side-effect ledger ---------------------------------------------------------------
@dataclass(frozen=True)
class LedgerRecord:
    """One handler call that reached the outside world.

    `fresh` is False when the (simulated) service recognised a repeat of an operation it had
    already performed and did nothing, the way an API with idempotency keys answers a retry.
    """

    op: Literal["apply", "undo"]
    workflow_id: str
    step: str
    key: str
    ref: str
    fresh: bool
    pid: int


class Ledger:
    """An append-only file of side effects, shared by every process of a run.

    It stands for an external service that honours idempotency keys: an `apply` whose
    operation is already applied (and not undone) is a no-op returning the first reference,
    an `undo` of something already undone is a no-op. The service is keyed by
    `StepContext.idempotency_key` (scope `step`, the default), which is the same for every
    attempt of a step. Scope `attempt` keys it by `StepContext.attempt_key` instead, which
    changes when recovery re-runs a lost attempt (the new attempt token is what rejects
    zombies), and shows why that key cannot deduplicate a lost attempt's effect.

    Records are whole lines written under an exclusive lock, so a SIGKILL leaves either the
    record or nothing.
    """

    def __init__(self, path: str | Path, scope: str = "step") -> None:
        if scope not in ("step", "attempt"):
            raise ValueError(f"ledger scope must be 'step' or 'attempt', not {scope!r}")
        self.path = Path(path)
        self.scope = scope

    @classmethod
    def from_env(cls) -> Ledger | None:
        path = os.environ.get(LEDGER_ENV)
        if not path:
            return None
        return cls(path, os.environ.get(LEDGER_SCOPE_ENV, "step"))

    def _operation(self, ctx: StepContext) -> str:
        return ctx.idempotency_key if self.scope == "step" else ctx.attempt_key

    def apply(self, ctx: StepContext, ref: str) -> str:
        """Record the action of `ctx`; returns the reference in force (the first one when the
        service recognises a repeat)."""
        op = self._operation(ctx)
        with self._locked() as (records, write):
            live = _live_applies(records, self.scope)
            if op in live:
                write(
                    LedgerRecord(
                        "apply", ctx.workflow_id, ctx.step, op, live[op], False, os.getpid()
                    )
                )
                return live[op]
            write(LedgerRecord("apply", ctx.workflow_id, ctx.step, op, ref, True, os.getpid()))
            return ref

    def undo(self, ctx: StepContext, ref: str) -> bool:
        """Record the undo of the effect `ref`; False when it was not in force (a repeat)."""
        with self._locked() as (records, write):
            applied = {r.ref for r in records if r.op == "apply" and r.fresh}
            undone = {r.ref for r in records if r.op == "undo" and r.fresh}
            fresh = ref in applied and ref not in undone
            write(
                LedgerRecord(
                    "undo", ctx.workflow_id, ctx.step, self._operation(ctx), ref, fresh, os.getpid()
                )
            )
            return fresh

    def applied_ref(self, workflow_id: str, step: str) -> str | None:
        """The reference of the step's effect still in force, if any: how a compensation finds
        what to undo when the action's outcome was never saved (its worker died)."""
        records = self.records()
        undone = {r.ref for r in records if r.op == "undo" and r.fresh}
        live = [
            r.ref
            for r in records
            if r.op == "apply"
            and r.fresh
            and r.workflow_id == workflow_id
            and r.step == step
            and r.ref not in undone
        ]
        return live[-1] if live else None

    def records(self) -> list[LedgerRecord]:
        if not self.path.exists():
            return []
        return _parse(self.path.read_text())

    class _Lock:
        def __init__(self, ledger: Ledger) -> None:
            self.ledger = ledger

        def __enter__(self) -> tuple[list[LedgerRecord], Callable[[LedgerRecord], None]]:
            self.file = open(self.ledger.path, "a+", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self.file, fcntl.LOCK_EX)
            self.file.seek(0)
            records = _parse(self.file.read())

            def write(record: LedgerRecord) -> None:
                self.file.write(json.dumps(asdict(record)) + "\n")
                self.file.flush()

            return records, write

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()

    def _locked(self) -> Ledger._Lock:
        return Ledger._Lock(self)


def _parse(text: str) -> list[LedgerRecord]:
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(LedgerRecord(**json.loads(line)))
    return out


def _live_applies(records: Iterable[LedgerRecord], scope: str) -> dict[str, str]:
    """operation -> reference of every fresh apply not undone yet."""
    live: dict[str, str] = {}
    for r in records:
        if not r.fresh:
            continue
        if r.op == "apply":
            live[r.key] = r.ref
        else:
            for k, v in list(live.items()):
                if v == r.ref:
                    del live[k]
    return live


def check_ledger(records: Sequence[LedgerRecord], workflows: Iterable[WorkflowState]) -> list[str]:
    """Problems in the side effects of finished workflows (empty when all is well)."""
    problems: list[str] = []
    for wf in workflows:
        # A step without a compensation declares nothing to undo (a read, a notification),
        # unless it is at or after the pivot: those must not have applied at all.
        names = {s.name for s in wf.steps}
        must_undo = {s.name for s in wf.steps if s.compensation is not None} | _past_pivot(wf)
        mine = [r for r in records if r.workflow_id == wf.id]
        for step in {r.step for r in mine}:
            rs = [r for r in mine if r.step == step]
            applied = [r.ref for r in rs if r.op == "apply" and r.fresh]
            undone = [r.ref for r in rs if r.op == "undo" and r.fresh]
            stray = [r.ref for r in rs if r.op == "undo" and r.ref not in applied]
            net = len(applied) - len(undone)
            if len(applied) > 1:
                problems.append(f"{step}: applied {len(applied)} times ({', '.join(applied)})")
            if stray:
                problems.append(f"{step}: undo of something never applied ({', '.join(stray)})")
            undoable = step not in names or step in must_undo
            if wf.status is WorkflowStatus.COMPENSATED and net != 0 and undoable:
                problems.append(f"{step}: still applied on a COMPENSATED workflow")
            if wf.status is WorkflowStatus.COMPLETED and net != 1:
                problems.append(f"{step}: applied {net} times net on a COMPLETED workflow")
            stored = wf.step(step)
            if (
                stored.status is StepStatus.COMPLETED
                and wf.status is WorkflowStatus.COMPLETED
                and applied
                and isinstance(stored.result, Mapping)
                and stored.result.get("booking", applied[-1]) != applied[-1]
            ):
                problems.append(
                    f"{step}: stored result names {stored.result.get('booking')},"
                    f" the service applied {applied[-1]}"
                )
    return problems


def _past_pivot(wf: WorkflowState) -> set[str]:
    past = {s.name for s in wf.steps if s.pivot}
    for s in wf.steps:  # table order lists dependencies first
        if any(d in past for d in s.depends_on):
            past.add(s.name)
    return past


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


# -- the worker process --------------------------------------------------------------------
def _worker_main(spec: dict[str, Any]) -> int:
    """One crash-worker process: optionally recover, optionally start the saga, then run jobs
    until every workflow of the store is final (or the queue has nothing left)."""
    from ..app import EngineOptions
    from ..definition import load_definition
    from ..runtime.recovery import Recovery

    kill_at = tuple(spec["kill_at"]) if spec.get("kill_at") else None
    record = Path(spec["record"]) if spec.get("record") else None
    engine = EngineOptions(
        store=spec["store"],
        queue=spec["queue"],
        # The operator's modules, or the allowed hints (see _with_handlers), as a worker's.
        handlers=spec["handlers"],
        allow="listed",
        worker=f"crash-worker-{os.getpid()}",
        probe=make_probe(kill_at, record),
    ).build()
    store, queue = engine.store, engine.queue
    if spec.get("recover"):
        Recovery(engine, timeout=0.0).run_once()
    if spec.get("definition"):
        definition = load_definition(spec["definition"])
        if spec["handlers"]:
            definition.spec = definition.spec.model_copy(update={"handlers": spec["handlers"]})
        engine.start(definition, spec.get("input") or {})
    deadline = time.monotonic() + float(spec.get("deadline", 60))

    def done() -> bool:
        return all(wf.status in _FINAL for wf in store.list())

    if urlsplit(spec["queue"]).scheme == "inline":
        queue.drain(done, max(deadline - time.monotonic(), 0.0))
    else:
        _serve_rq(engine, done, deadline)
    store.close()
    return 0


def _serve_rq(engine: Any, done: Callable[[], bool], deadline: float) -> None:
    """Run RQ burst passes (jobs in this process, as `statesaga worker` does) until `done`.

    Delayed jobs (retry backoffs) are moved from RQ's scheduled registry here rather than by
    RQ's scheduler: a SIGKILLed worker keeps holding the scheduler lock of its queue for a
    minute, and the crash matrix would wait that long for every retry after a kill.
    """
    from rq.job import Job as RQJob

    from ..worker import make_rq_worker, rq_queue_of, serving

    rq_queue = rq_queue_of(engine)
    registry = rq_queue.scheduled_job_registry
    worker = make_rq_worker(rq_queue)
    with serving(engine.run_job):
        while not done() and time.monotonic() < deadline:
            due = registry.get_jobs_to_schedule(int(time.time()))
            for job in RQJob.fetch_many(
                due, connection=rq_queue.connection, serializer=rq_queue.serializer
            ):
                if job is not None:
                    registry.remove(job)
                    rq_queue.enqueue_job(job)
            worker.work(burst=True, logging_level="WARNING")
            if not done():
                time.sleep(0.1)


# -- the matrix ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A saga to crash: a definition file and its input; `name` labels the table rows.

    `expect` is the outcome that is correct for this input (COMPLETED, COMPENSATED or FAILED,
    e.g. FAILED for a failure after the pivot). Without it the clean run must end COMPLETED or
    COMPENSATED, and each crash must end as the clean run did.
    """

    name: str
    definition: str
    input: Mapping[str, Any] = field(default_factory=dict)
    handlers: Sequence[str] = ()
    expect: str | None = None

    def __post_init__(self) -> None:
        if self.expect is not None and self.expect not in _EXPECTABLE:
            raise ValueError(
                f"scenario {self.name!r}: cannot expect {self.expect!r}; "
                f"expect one of {', '.join(sorted(_EXPECTABLE))}"
            )


_EXPECTABLE = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})


@dataclass
class CellResult:
    scenario: str
    event: BoundaryEvent | None
    killed: bool
    status: str
    expected: str
    problems: list[str] = field(default_factory=list)
    applies: int = 0
    repeats: int = 0
    undos: int = 0
    #: Why an outcome other than `expected` is correct (a lost attempt cost a retry).
    note: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and (self.status == self.expected or self.note is not None)


@dataclass
class _Settings:
    store: Callable[[Path], str]
    queue: Callable[[str], str]
    workdir: Path
    deadline: float
    ledger_scope: str


def _run_worker(settings: _Settings, celldir: Path, spec: dict[str, Any], name: str) -> int:
    env = dict(os.environ)
    env[LEDGER_ENV] = str(celldir / "ledger.jsonl")
    env[LEDGER_SCOPE_ENV] = settings.ledger_scope
    with open(celldir / f"{name}.log", "wb") as log:
        proc = subprocess.run(
            # -P: `-m` would put the working directory first on sys.path, where a planted
            # `redis.py` would shadow the library; handler modules are found there last.
            [sys.executable, "-P", "-m", "statesaga.verify.crashcheck", json.dumps(spec)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=settings.deadline + 30,
            check=False,
        )
    return proc.returncode


def _cell(
    settings: _Settings, scenario: Scenario, event: BoundaryEvent | None, expected: str | None
) -> tuple[CellResult, list[BoundaryEvent]]:
    """One run: start the saga in a worker that dies at `event` (None: a clean calibration run
    recording every boundary), then recover with a fresh worker, then check."""
    from ..plugins import open_store
    from ..runtime.recovery import get_recoverable_workflows

    tag = "clean" if event is None else f"{event.boundary}-{event.n}"
    celldir = settings.workdir / f"{scenario.name}-{tag}"
    celldir.mkdir(parents=True, exist_ok=True)
    store_url = settings.store(celldir)
    queue_url = settings.queue(f"crash-{uuid.uuid4().hex[:10]}")
    base = {
        "store": store_url,
        "queue": queue_url,
        "handlers": list(scenario.handlers),
        "deadline": settings.deadline,
    }
    record = celldir / "events.jsonl"
    first = dict(
        base,
        definition=scenario.definition,
        input=dict(scenario.input),
        kill_at=[event.boundary, event.n] if event else None,
        record=str(record) if event is None else None,
    )
    code = _run_worker(settings, celldir, first, "worker")
    killed = code == -signal.SIGKILL
    problems: list[str] = []
    if code not in (0, -signal.SIGKILL):
        problems.append(f"worker exited with {code} (see {celldir / 'worker.log'})")
    if event is not None and not killed:
        problems.append("the boundary was not reached (the worker was not killed)")
    if killed:
        code = _run_worker(settings, celldir, dict(base, recover=True), "recovery")
        if code != 0:
            problems.append(f"recovery worker exited with {code} (see {celldir / 'recovery.log'})")
    events = (
        [BoundaryEvent(**json.loads(line)) for line in record.read_text().splitlines()]
        if record.exists()
        else []
    )
    store = open_store(store_url)
    try:
        workflows = store.list()
        stuck = get_recoverable_workflows(store, 0.0)
    finally:
        store.close()
    status = "MISSING"
    if len(workflows) != 1:
        problems.append(f"{len(workflows)} workflows in the store, expected 1")
    if workflows:
        status = workflows[0].status.value
    for wf in workflows:
        if wf.status not in _FINAL:
            problems.append(f"{wf.id} stuck in {wf.status.value}")
    problems.extend(f"{wf.id} still recoverable" for wf in stuck if wf.status in _FINAL)
    records = Ledger(celldir / "ledger.jsonl").records()
    problems.extend(check_ledger(records, workflows))
    want = scenario.expect or expected or status
    note = None
    if scenario.expect is None and status not in (
        WorkflowStatus.COMPLETED.value,
        WorkflowStatus.COMPENSATED.value,
    ):
        problems.append(
            f"ended {status}, expected COMPLETED or COMPENSATED (if {status} is correct for "
            f"this input, say so: --expect {status})"
        )
    elif status != want and len(workflows) == 1:
        note = lost_attempt_cost_a_retry(workflows[0])
    result = CellResult(
        scenario=scenario.name,
        event=event,
        killed=killed,
        status=status,
        expected=want,
        problems=problems,
        applies=sum(1 for r in records if r.op == "apply" and r.fresh),
        repeats=sum(1 for r in records if not r.fresh),
        undos=sum(1 for r in records if r.op == "undo" and r.fresh),
        note=note,
    )
    return result, events


def lost_attempt_cost_a_retry(wf: WorkflowState) -> str | None:
    """Why a crash run may correctly end otherwise than the clean run: a lost worker's attempt
    counts as an attempt (README, "Crashes, recovery and cancel"), so a step whose last retry
    went to a lost attempt gives up one attempt earlier. Returns the note, or None."""
    for step in wf.steps:
        lost = [
            h
            for h in wf.history
            if h.step == step.name
            and h.trigger == "time_out"
            and h.detail is not None
            and "worker lost" in h.detail
        ]
        gave_up = step.status in (StepStatus.FAILED, StepStatus.IN_DOUBT) or (
            step.in_doubt and step.status in (StepStatus.COMPENSATING, StepStatus.COMPENSATED)
        )
        if lost and gave_up and step.attempts >= step.retry.max_attempts:
            return f"a lost attempt of {step.name} cost a retry"
    return None


def _with_handlers(scenario: Scenario) -> Scenario:
    """Workers import an explicit list of handler modules: default to the definition's
    `handlers` hint, each of which must be on the operator's allow-list."""
    if scenario.handlers:
        return scenario
    from ..definition import load_definition
    from ..errors import RegistryError
    from ..security.allowlist import AllowList

    allowed = AllowList.for_operator()
    hints = load_definition(scenario.definition).spec.handlers
    refused = [hint for hint in hints if allowed.resolve(hint) is None]
    if refused:
        raise RegistryError(allowed.refusal(refused[0]))
    modules = tuple(str(allowed.resolve(hint)) for hint in hints)
    return Scenario(scenario.name, scenario.definition, scenario.input, modules, scenario.expect)


def _sqlite_store(celldir: Path) -> str:
    return f"sqlite:///{(celldir / 'store.db').resolve()}"


def _queue_factory(queue_url: str) -> Callable[[str], str]:
    """Each cell gets its own queue name on an RQ server, so cells can run side by side."""
    parts = urlsplit(queue_url)
    if parts.scheme == "inline":
        return lambda name: queue_url

    def named(name: str) -> str:
        query = parse_qs(parts.query)
        query["queue"] = [name]
        return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))

    return named


def _store_factory(store_url: str | None) -> Callable[[Path], str]:
    if store_url is None:
        return _sqlite_store
    if urlsplit(store_url).scheme == "memory":
        raise ValueError("the crash matrix needs a store shared between processes, not memory://")
    return lambda celldir: store_url


def check_crashes(
    scenarios: Sequence[Scenario],
    *,
    queue: str = "inline://",
    store: str | None = None,
    workdir: str | Path | None = None,
    boundaries: Iterable[str] = BOUNDARIES,
    parallel: int | None = None,
    deadline: float = 60.0,
    ledger_scope: str = "step",
    keep: bool = False,
) -> list[CellResult]:
    """Run every scenario clean, then once per boundary it passed, killed there.

    `store` None gives each cell its own SQLite file; a store URL given here is shared by
    every cell, so `parallel` is forced to 1 and each cell's workflow must be told apart, which
    the checks do not do: pass a URL only for a store that is emptied between runs.
    """
    wanted = set(boundaries)
    unknown = wanted - set(BOUNDARIES)
    if unknown:
        raise ValueError(f"unknown boundaries {sorted(unknown)}; known: {', '.join(BOUNDARIES)}")
    scenarios = [_with_handlers(s) for s in scenarios]
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="statesaga-crash-")) if own_dir else Path(str(workdir))
    settings = _Settings(
        store=_store_factory(store),
        queue=_queue_factory(queue),
        workdir=root,
        deadline=deadline,
        ledger_scope=ledger_scope,
    )
    workers = 1 if store is not None else (parallel or max(2, os.cpu_count() or 2))
    results: list[CellResult] = []
    try:
        with ThreadPoolExecutor(workers) as pool:
            clean = list(pool.map(lambda s: _cell(settings, s, None, None), scenarios))
            jobs = []
            for scenario, (baseline, events) in zip(scenarios, clean, strict=True):
                results.append(baseline)
                for event in events:
                    if event.boundary in wanted:
                        jobs.append((scenario, event, baseline.status))
            order = {b: i for i, b in enumerate(BOUNDARIES)}
            jobs.sort(key=lambda j: (scenarios.index(j[0]), order[j[1].boundary], j[1].n))
            for result, _ in pool.map(lambda j: _cell(settings, j[0], j[1], j[2]), jobs):
                results.append(result)
    finally:
        if own_dir and not keep and all(r.ok for r in results):
            shutil.rmtree(root, ignore_errors=True)
    return results


def format_table(results: Sequence[CellResult]) -> str:
    """The boundary × outcome table, one row per cell."""
    header = ("scenario", "boundary", "n", "job", "killed", "outcome", "effects", "check")
    rows = [header]
    for r in results:
        e = r.event
        effects = f"+{r.applies} -{r.undos}" + (f" ({r.repeats} repeat)" if r.repeats else "")
        check = "ok" if r.ok else "FAIL: " + "; ".join(r.problems or [f"expected {r.expected}"])
        if r.ok and r.status != r.expected and r.note:
            check = f"ok ({r.note})"
        rows.append(
            (
                r.scenario,
                e.boundary if e else "(no crash)",
                str(e.n) if e else "",
                e.label if e else "",
                "yes" if r.killed else "no",
                r.status,
                effects,
                check,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    summary = Counter("ok" if r.ok else "failed" for r in results)
    lines.append(f"{len(results)} runs: {summary['ok']} ok, {summary['failed']} failed")
    return "\n".join(lines)


def trip_scenarios(
    handlers: Sequence[str] = ("statesaga.examples.ledger_handlers",),
) -> list[Scenario]:
    """The shipped trip saga: one run that completes and one that unwinds."""
    from importlib.resources import files

    path = str(files("statesaga.examples") / "trip.yaml")
    trip = {
        "origin": "CDG",
        "destination": "LIS",
        "nights": 3,
        "amount": 640,
        "email": "ada@example.org",
    }
    return [
        Scenario("trip", path, trip, tuple(handlers)),
        Scenario("trip-fails", path, dict(trip, fail_at="reserve_car"), tuple(handlers)),
    ]


__all__ = [
    "BOUNDARIES",
    "LEDGER_ENV",
    "LEDGER_SCOPE_ENV",
    "BoundaryEvent",
    "CellResult",
    "Ledger",
    "LedgerRecord",
    "Scenario",
    "check_crashes",
    "check_ledger",
    "format_table",
    "make_probe",
    "trip_scenarios",
]


if __name__ == "__main__":
    sys.exit(_worker_main(json.loads(sys.argv[1])))
