"""Deterministic simulation of the engine, as FoundationDB and TigerBeetle test themselves.

The real Engine, effects and lifecycle tables run on a simulated clock, an in-memory store
(`memory://`) and a queue whose deliveries a seeded scheduler orders. The user's handlers are
replaced by ledger stand-ins (statesaga.verify.standins) that record every side effect in a
simulated service. One seed is one run:

1. **Faults.** The scheduler draws events: deliver a due job (to one of many workers, in any
   order), deliver it twice, lose it, deliver a stale copy of an old job, a recovery scan
   (resume, or `--cancel`), a graceful or forced cancel, a signal, a clock jump, a disk that
   fills for a few events (every write refused, nothing written). Each event runs on one
   process (three workers, recovery, the operator), and in half the seeds their clocks
   disagree by up to two minutes (`ProcessClock`); the queue keeps due times on one clock, as
   RQ's do on Redis's. At every
   boundary of a job (the engine's probe points: before and after the action, after the save
   and before the enqueue, around a compensation) the worker may die (`SimCrash`), or other
   events may run right there, as they would on other machines. Handlers fail, time out after
   their effect, or die after it.
2. **Healing.** No more faults: jobs run, timers fire, waits get their signals, recovery
   scans when the queue is empty, until the workflow ends or a bound is reached.

The invariants (statesaga.verify.invariants) are checked after every event and at the end. A seed
replays exactly: `simulate(definition, seed)` twice gives the same trace.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from ..app import EngineOptions
from ..definitions.load import WorkflowDefinition
from ..definitions.spec import StepSpec
from ..engine import Engine
from ..errors import AdapterError
from ..models import RetryPolicy, StepStatus, WorkflowState, WorkflowStatus
from ..plugins import open_store
from ..ports import Clock, Job, JobRunner, Queue, Store
from ..registry import Registry
from ..runtime.observe import waiting_for_signal
from ..runtime.outage import is_outage
from ..runtime.recovery import Recovery, RecoveryAction
from ..runtime.runtime import Probe, Runtime
from ..vocabulary import STEP_SIGNALLABLE
from .events import ACTIONS, RECOVERY_TIMEOUT, action_fault, job_name, progress, undo_fault
from .invariants import ENDED, check_end, check_event
from .standins import Faults, RefusingStore, Service, SimCrash, pick, register_standins

EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class SimClock:
    """Simulated time: it moves only when the scheduler moves it."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(seconds, 0.0))

    def advance_to(self, when: datetime) -> None:
        if when > self._now:
            self._now = when


class ProcessClock:
    """The clock of the simulated process that runs the current event: simulated time plus
    that process's offset, as hosts whose clocks disagree (see `Simulation.on`)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.offset = 0.0

    def now(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.offset)


#: The simulated processes an event runs on.
WORKERS = ("worker-1", "worker-2", "worker-3")
PROCESSES = (*WORKERS, "recovery", "operator")


@dataclass
class Pending:
    job: Job
    due: datetime
    seq: int


class SimQueue(Queue):
    """The Queue port for the simulation: it only records jobs; the scheduler delivers them."""

    in_process = False

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.pending: list[Pending] = []
        self.delivered: list[Job] = []
        self._seq = 0
        self.runner: JobRunner | None = None

    def bind(self, runner: JobRunner) -> None:
        self.runner = runner

    def enqueue(self, job: Job, delay: float = 0.0) -> None:
        self._seq += 1
        due = self.clock.now() + timedelta(seconds=max(delay, 0.0))
        self.pending.append(Pending(job, due, self._seq))

    def due(self) -> list[Pending]:
        now = self.clock.now()
        return [p for p in self.pending if p.due <= now]

    def next_due(self) -> datetime | None:
        return min((p.due for p in self.pending), default=None)

    def drain(self, until: Callable[[], bool], timeout: float | None = None) -> None:
        raise AdapterError("the simulation's scheduler delivers jobs itself")

    def close(self) -> None:
        self.pending.clear()


@dataclass(frozen=True)
class Rates:
    """How often each fault happens (probabilities per opportunity)."""

    crash: float = 0.08  # at each probe point
    interleave: float = 0.12  # other events run at a probe point
    fail: float = 0.15  # an action attempt fails
    timeout: float = 0.03  # an action times out after its effect
    die_after_effect: float = 0.04  # the worker dies inside the handler, after the effect
    doomed: float = 0.35  # one action step fails on every attempt (the saga unwinds)
    undo_fail: float = 0.1
    progress: float = 0.5  # a step on a nested chart reports progress
    skewed: float = 0.5  # the processes' clocks disagree (per seed)
    skew: float = 120.0  # by up to this many seconds either way


#: Scheduler events during the fault phase, by weight. Each seed leaves some kinds out (see
#: OPTIONAL), so some runs see no cancel at all and go forward past the pivot.
EVENTS = {
    "deliver": 60.0,
    "duplicate": 4.0,
    "lose": 3.0,
    "stale": 3.0,
    "recover": 5.0,
    "recover_cancel": 1.0,
    "cancel": 1.5,
    "force_cancel": 1.5,
    "suspend": 1.0,
    "signal": 8.0,
    "tick": 3.0,
    "disk_full": 1.5,
}
#: The chance that a seed's run includes each kind of event at all.
OPTIONAL = {
    "duplicate": 0.5,
    "lose": 0.5,
    "stale": 0.5,
    "recover_cancel": 0.2,
    "cancel": 0.25,
    "force_cancel": 0.25,
    "suspend": 0.25,
    "disk_full": 0.3,
}


@dataclass
class SeedResult:
    seed: int
    status: str
    problems: list[str]
    trace: list[str]
    events: int
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"seed {self.seed}: {self.status} after {self.events} events"]
        lines += [f"  {t}" for t in self.trace]
        lines += [f"  VIOLATION: {p}" for p in self.problems]
        if self.ok:
            lines.append(f"  ok: ended {self.status}; every invariant held")
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        return "\n".join(lines)


class _Violation(Exception):
    pass


def simulated_definition(definition: WorkflowDefinition) -> WorkflowDefinition:
    """The same saga for the simulation: no handler modules to import (stand-ins replace
    them), no params (stand-ins take none), no jitter, and no timeouts on actions (a stand-in
    times out by itself; a wait keeps its timeout, which is a timer)."""
    spec = definition.spec

    def calm(retry: RetryPolicy | None) -> RetryPolicy | None:
        return None if retry is None else retry.model_copy(update={"jitter": 0.0})

    def step(s: StepSpec) -> StepSpec:
        comp = s.compensation
        if comp is not None:
            comp = comp.model_copy(update={"params": {}, "retry": calm(comp.retry)})
        update: dict[str, Any] = {"params": {}, "compensation": comp, "retry": calm(s.retry)}
        if s.kind == "action":
            update["timeout"] = None
        return s.model_copy(update=update)

    defaults = spec.defaults.model_copy(
        update={
            "retry": calm(spec.defaults.retry),
            "compensation_retry": calm(spec.defaults.compensation_retry),
            "timeout": None,
        }
    )
    # No input schema: the stand-ins resolve no params, and every seed starts with no input.
    new = spec.model_copy(
        update={
            "handlers": (),
            "steps": tuple(step(s) for s in spec.steps),
            "defaults": defaults,
            "input": None,
        }
    )
    return WorkflowDefinition(new, definition.file, definition.lines)


class Rig:
    """What every seed of a run shares: the simulated definition, and the registry and
    compiled lifecycles of one Engine built for it (building an Engine scans the installed
    plugins, which would cost more than a seed). Each seed runs on a fresh Runtime made of
    those and its own store, queue, clock and probe (`runtime`)."""

    def __init__(self, definition: WorkflowDefinition, registry: Registry | None = None) -> None:
        self.definition = simulated_definition(definition)
        # A registry given here may bring its own effects or guards (they win over the
        # built-ins), e.g. to check that the simulation catches a defective one.
        self._build(registry.copy() if registry is not None else Registry())

    def _build(self, registry: Registry) -> None:
        self.base = (
            EngineOptions(
                store=open_store("memory://"),
                queue=SimQueue(SimClock()),
                registry=registry,
                worker="sim",
                heartbeat=0,
                definition=self.definition,
            )
            .build()
            .runtime
        )
        self._store_class: Any = type(self.base.store)

    def new_store(self) -> Store:
        """An empty store of the kind `memory://` opens, without scanning the plugins again."""
        store: Store = self._store_class.from_url("memory://")
        return store

    def runtime(
        self, store: Store, queue: SimQueue, clock: Clock, probe: Probe, *, eager: bool
    ) -> Runtime:
        """A fresh Runtime for one seed: the shared registry (the seed's stand-ins go in it)
        and lifecycles, and the seed's store, queue, clock and probe."""
        base = self.base
        return Runtime(
            store,
            queue,
            base.registry,
            base.workflow_chart,
            base.step_chart,
            clock=clock,
            telemetry=base.telemetry,
            worker=base.worker,
            heartbeat_interval=base.heartbeat_interval,
            probe=probe,
            eager=eager,
            allowed=base.allowed,
        )


class Simulation:
    """One seeded run of one workflow of `definition` (see the module docstring)."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        seed: int,
        *,
        input: dict[str, Any] | None = None,
        rates: Rates | None = None,
        fault_events: int = 60,
        heal_events: int = 400,
        eager: bool = True,  # the engine's default: the settle runs the next step itself
        registry: Registry | None = None,
        rig: Rig | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.rates = rates or Rates()
        self.fault_events = fault_events
        self.heal_events = heal_events
        rig = rig or Rig(definition, registry)
        self.definition = rig.definition
        self.input = dict(input or {})
        self.clock = SimClock()
        self.queue = SimQueue(self.clock)
        self.service = Service.for_definition(self.definition)
        actions = [s.name for s in self.definition.steps if s.kind == "action"]
        self.doomed = (
            self.rng.choice(actions) if actions and self.rng.random() < self.rates.doomed else None
        )
        self.kinds = {
            kind: weight
            for kind, weight in EVENTS.items()
            if self.rng.random() < OPTIONAL.get(kind, 1.0)
        }
        skewed = self.rng.random() < self.rates.skewed
        self.offsets = {
            p: round(self.rng.uniform(-self.rates.skew, self.rates.skew), 1) if skewed else 0.0
            for p in PROCESSES
        }
        self.process_clock = ProcessClock(self.clock)
        #: Events left before the full disk is freed (0: writes work).
        self.full_for = 0
        self.healing = False
        self.depth = 0
        self.trace: list[str] = []
        self.ended_as: WorkflowStatus | None = None
        self.queue.in_process = eager
        self.store = RefusingStore(rig.new_store())
        runtime = rig.runtime(self.store, self.queue, self.process_clock, self._probe, eager=eager)
        self.engine = engine = Engine.over(runtime)
        register_standins(
            engine.registry,
            self.definition,
            self.service,
            Faults(partial(action_fault, self), partial(undo_fault, self), partial(progress, self)),
        )
        self.recovery = Recovery(self.engine, timeout=RECOVERY_TIMEOUT, by="recovery")
        self.canceller = Recovery(
            self.engine, timeout=RECOVERY_TIMEOUT, action=RecoveryAction.CANCEL, by="recovery"
        )
        self.wf_id = ""
        self.events = 0
        self._noted: list[str] = []
        self._last: WorkflowState | None = None
        self.actions = self._actions()

    def _actions(self) -> dict[str, Callable[[], None]]:
        """What each scheduler event does, as statesaga.verify.events' table says."""
        return {kind: partial(action, self) for kind, action in ACTIONS.items()}

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> SeedResult:
        problems: list[str] = []
        try:
            with self.on("operator"):
                wf = self._start()
            self.wf_id = wf.id
            left_out = ", ".join(sorted(set(EVENTS) - set(self.kinds))) or "none"
            doomed = self.doomed or "none"
            self._note("start", f"doomed step: {doomed}; events left out: {left_out}")
            if any(self.offsets.values()):
                clocks = ", ".join(f"{p} {o:+.1f}s" for p, o in self.offsets.items())
                self._note("clocks", clocks)
            self._check()
            for _ in range(self.fault_events):
                if self._ended() and not self.queue.pending:
                    break
                self._event(self._choose())
            self.healing = True
            self._free_disk()
            self._heal()
            wf = self._wf()
            problems = check_end(wf, self.service)
            if not problems and self._restartable(wf):
                problems = self._restart(wf)
                wf = self._wf()
            if not problems and wf.status in ENDED:
                problems = self._quiet_after_end(wf)
        except _Violation as exc:
            problems = str(exc).splitlines()
            if self.wf_id and self._noted:
                self._flush()
        if not self.wf_id:
            return SeedResult(self.seed, "NOT STARTED", problems, self.trace, self.events)
        wf = self._wf()
        reason = (wf.reason or "").replace(self.wf_id, "WF") or None
        return SeedResult(self.seed, wf.status.value, problems, self.trace, self.events, reason)

    def _start(self) -> WorkflowState:
        """The workflow of this run (statesaga.verify.plansim starts a plan instead)."""
        return self.engine.start(self.definition, self.input)

    def _heal(self) -> None:
        scans = 0
        for _ in range(self.heal_events):
            wf = self._last or self._wf()
            if wf.status in ENDED and not self.queue.pending:
                return
            if self.queue.due():
                self._event("deliver")
                continue
            if self.queue.pending:
                self._event("wait")
                continue
            if wf.status in ENDED:
                return
            if waiting_for_signal(wf):
                self._event("signal")
                continue
            scans += 1
            if scans > 3:
                return  # check_end reports it did not converge
            self._event("recover")

    def _restartable(self, wf: WorkflowState) -> bool:
        """A halted workflow nothing was undone on: half of them an operator fixes and
        restarts (from its first step not completed), which must converge again."""
        if wf.status is not WorkflowStatus.FAILED:
            return False
        if any(e.op == "undo" for e in self.service.entries):
            return False  # a restart re-uses the keys, which an undo retired
        return self.rng.random() < 0.5

    def _restart(self, wf: WorkflowState) -> list[str]:
        open_ = [s.name for s in wf.steps if s.status is not StepStatus.COMPLETED]
        start = open_[0] if open_ else wf.steps[-1].name  # all done: halted by a late cancel
        self.doomed = None  # the operator fixed what failed
        self.ended_as = None
        with self.on("operator"):
            self.engine.restart(self.wf_id, start, reason="fixed", by="operator")
        self._note(f"restart --from {start}", "accepted")
        self._check()
        self._heal()
        return check_end(self._wf(), self.service)

    def _quiet_after_end(self, wf: WorkflowState) -> list[str]:
        """Recovery scans after the end must neither pick the workflow up nor add history."""
        before = len(wf.history)
        self.clock.advance(RECOVERY_TIMEOUT + 1)
        with self.on("recovery"):
            self.recovery.run_once()
        after = self._wf()
        if len(after.history) != before:
            return [
                f"recovery appended {len(after.history) - before} history entries to a "
                f"{after.status.value} workflow (history growth without progress)"
            ]
        return []

    def _choose(self) -> str:
        weights = dict(self.kinds)
        if not self.queue.due():
            weights.pop("deliver", None)
            weights.pop("duplicate", None)
            weights["wait"] = 10.0
        if not self.queue.pending:
            weights.pop("lose", None)
            weights.pop("wait", None)
        if not self.queue.delivered:
            weights.pop("stale", None)
        if not self._signals():
            weights.pop("signal", None)
        return pick(self.rng, weights)

    def _event(self, kind: str) -> None:
        self.events += 1
        self.actions[kind]()
        if self.full_for > 0 and kind != "disk_full":
            self.full_for -= 1
            if self.full_for == 0:
                self._free_disk()
        self._check()

    @contextmanager
    def on(self, process: str) -> Iterator[None]:
        """Run what follows on `process`'s clock (an interleaved event may run on another's
        meanwhile: the clock is given back after it)."""
        before = self.process_clock.offset
        self.process_clock.offset = self.offsets[process]
        try:
            yield
        finally:
            self.process_clock.offset = before

    def _free_disk(self) -> None:
        if self.store.refusing:
            self.store.refusing = False
            self.full_for = 0
            self._note("disk", "space freed: writes work again")

    def _run(self, job: Job, how: str) -> None:
        self.queue.delivered.append(job)
        worker = self.rng.choice(WORKERS)
        label = f"{how} {job_name(job)}" + (f" on {worker}" if self.offsets[worker] else "")
        try:
            with self.on(worker):
                self.engine.run_job(job)
        except SimCrash as crash:
            self._note(label, f"worker died: {crash}")
            return
        except _Violation:
            raise
        except Exception as exc:  # a job must never raise: workers would drop it
            if is_outage(exc):  # as statesaga.worker.run_job: one line, left to recovery
                self._note(label, f"cut off: {exc}")
                return
            self._note(label, f"raised {type(exc).__name__}: {exc}")
            raise _Violation(self._where(f"run_job raised {type(exc).__name__}: {exc}")) from exc
        self._note(label, "ran")

    # -- faults at the engine's boundaries ---------------------------------------------------
    def _probe(self, boundary: str, job: Job) -> None:
        if boundary == "before_action":
            # Its claim was the last write before the call: from here the handler may have
            # been called (a death here and one inside it look the same to the engine).
            self.service.reached.add((job.step, job.attempt))
        if self.healing:
            return
        r = self.rng.random()
        if r < self.rates.crash:
            raise SimCrash(f"at {boundary}")
        if r < self.rates.crash + self.rates.interleave and self.depth < 2:
            self.depth += 1
            self._note(f"  at {boundary} of {job_name(job)}", "meanwhile:")
            self._flush()
            try:
                for _ in range(self.rng.randint(1, 2)):
                    self._event(self._choose())
            finally:
                self.depth -= 1

    # -- helpers ---------------------------------------------------------------------------
    def _wf(self) -> WorkflowState:
        return self.engine.store.get(self.wf_id)

    def _ended(self) -> bool:
        return self._last is not None and self._last.status in ENDED

    def _signals(self) -> list[str]:
        wf = self._last  # as of the last check: a signal that came too late is refused
        if wf is None:
            return []
        return sorted(
            {
                s.signal
                for s in wf.steps
                if s.kind == "wait" and s.signal and s.status in STEP_SIGNALLABLE
            }
        )

    def _check(self) -> None:
        """Write the trace lines of what just happened, then check the invariants (one read
        of the stored workflow for both)."""
        if not self.wf_id:
            return
        wf = self._flush()
        problems = check_event(wf, self.service, self.ended_as)
        if self.ended_as is None and wf.status in ENDED:
            self.ended_as = wf.status
        if problems:
            raise _Violation(self._where("\n".join(problems)))

    def _where(self, text: str) -> str:
        return text

    def _note(self, event: str, outcome: str) -> None:
        t = (self.clock.now() - EPOCH).total_seconds()
        self._noted.append(f"{'    ' * self.depth}t={t:7.1f} {event}: {outcome}")

    def _flush(self) -> WorkflowState:
        wf = self._last = self._wf()
        state = " ".join(f"{s.name}:{_short(s.status)}#{s.attempts}" for s in wf.steps)
        for text in self._noted:
            self.trace.append(f"{text} | {wf.status.value} [{state}]".replace(self.wf_id, "WF"))
        self._noted.clear()
        return wf


_SHORT = {
    StepStatus.PENDING: "pend",
    StepStatus.QUEUED: "queued",
    StepStatus.WAITING: "wait",
    StepStatus.EXECUTING: "exec",
    StepStatus.RETRYING: "retry",
    StepStatus.COMPLETED: "done",
    StepStatus.FAILED: "FAIL",
    StepStatus.IN_DOUBT: "DOUBT",
    StepStatus.COMPENSATING: "undoing",
    StepStatus.COMPENSATED: "undone",
    StepStatus.COMPENSATION_FAILED: "UNDO-FAIL",
    StepStatus.SKIPPED: "skip",
}


def _short(status: StepStatus) -> str:
    return _SHORT.get(status, status.value.lower())


def simulate(
    definition: WorkflowDefinition, seed: int, *, input: dict[str, Any] | None = None, **kw: Any
) -> SeedResult:
    """Run one seed. The same seed gives the same trace."""
    return Simulation(definition, seed, input=input, **kw).run()


@dataclass
class Summary:
    """What a run of many seeds found: how each ended, and the failing seeds."""

    ran: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failed: list[SeedResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        ends = ", ".join(f"{n} {status}" for status, n in sorted(self.outcomes.items()))
        verdict = "every invariant held" if self.ok else f"{len(self.failed)} failed"
        return f"{self.ran} seeds: {verdict} ({ends})"


def run_seeds(
    definition: WorkflowDefinition,
    seeds: Iterable[int],
    *,
    input: dict[str, Any] | None = None,
    stop_at_first: bool = True,
    **kw: Any,
) -> Summary:
    """Run many seeds; stop at the first failure unless told otherwise."""
    summary = Summary()
    rig = Rig(definition, kw.pop("registry", None))
    for seed in seeds:
        summary.ran += 1
        result = simulate(definition, seed, input=input, rig=rig, **kw)
        summary.outcomes[result.status] += 1
        if not result.ok:
            summary.failed.append(result)
            if stop_at_first:
                break
    return summary


__all__ = [
    "EVENTS",
    "ProcessClock",
    "Rates",
    "SeedResult",
    "SimClock",
    "SimQueue",
    "Simulation",
    "Summary",
    "run_seeds",
    "simulate",
    "simulated_definition",
]
