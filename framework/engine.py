"""The Engine: reacts to one event at a time (start, a job's outcome, cancel, resume).

Each event is a small transaction: load the instance, fire triggers on a working copy (the
effects of each transition run on that copy and may ask for follow-up workflow triggers), save
with the revision check, and only then run what the effects deferred (enqueue, notify). If the
save loses the revision check nothing happened and the event is re-evaluated against the new
state, so replaying an event can never apply a transition twice.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

from .charts.machine import CompiledChart, State, below_top, top
from .context import StepContext
from .definition import WorkflowDefinition, resolve_params
from .errors import (
    ConflictError,
    DefinitionError,
    RegistryError,
    StateError,
    TransitionError,
)
from .models import (
    ACTIVE_WORKFLOW,
    HistoryEntry,
    SagaStep,
    StepError,
    StepStatus,
    WorkflowState,
    WorkflowStatus,
)
from .observability.telemetry import Telemetry
from .plugins import ChartSource, lifecycle_chart, load_registry_plugins
from .ports import Clock, Job, Queue, Store, SystemClock
from .registry import Handler, Registry
from .runtime.effects import install_builtins
from .runtime.handlers import HandlerTimeout, invoke
from .runtime.heartbeat import Heartbeats
from .security.allowlist import AllowList

log = logging.getLogger("statesaga.engine")
#: Transitions whose table names the `emit` effect are published here after the save.
events = logging.getLogger("statesaga.events")

#: Called after each save with the saved document: the engine goes on working on that object
#: (the next settle starts from it), so a listener copies what it keeps.
Listener = Callable[[WorkflowState, HistoryEntry], None]
#: Fault injection (statesaga.verify.crashcheck): called with a boundary name and the job at
#: before_action, after_action, after_save, before_compensation, after_compensation.
Probe = Callable[[str, Job], None]
_CONFLICT_RETRIES = 20


@dataclass
class Txn:
    """The working copy of one event, and what its transitions asked for."""

    wf: WorkflowState
    by: str | None = None
    persist: bool = False
    deferred: list[Callable[[], None]] = field(default_factory=list)
    #: Jobs to enqueue once saved, with their delays (kept apart from other deferred actions
    #: so the engine can run the next step itself; see Engine.eager).
    jobs: list[tuple[Job, float]] = field(default_factory=list)
    #: The step this save also dispatched, run by this process right after it (Engine.eager).
    claimed: Job | None = None
    followups: deque[str] = field(default_factory=deque)
    entries: list[HistoryEntry] = field(default_factory=list)
    emitted: list[HistoryEntry] = field(default_factory=list)
    #: A command's arguments for the effects of its transition (e.g. restart's from_step).
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransitionContext:
    """What guards and effects see: the engine, the working copy and the step (if any)."""

    engine: Engine
    txn: Txn
    step: SagaStep | None
    entry: HistoryEntry | None = None

    @property
    def workflow(self) -> WorkflowState:
        return self.txn.wf

    @property
    def now(self) -> datetime:
        return self.engine.clock.now()

    def then(self, trigger: str) -> None:
        """Fire a workflow trigger once the current transition is done."""
        self.txn.followups.append(trigger)

    def fire_step(self, step: SagaStep, trigger: str, detail: str | None = None) -> None:
        self.engine._fire(self.txn, step, trigger, detail)


class Engine:
    """Runs sagas: `start` a definition, then each job's outcome moves it on.

    Collaborators are passed in: a Store, a Queue (bound to this engine's `run_job`), a
    Registry of handlers (the effects and guards of installed plugins, then the built-in ones,
    are added to it) and a Clock. `workflow_chart` / `step_chart` replace a shipped lifecycle
    with a user's copy of it (a Chart, a YAML path or a dict), checked by
    `plugins.lifecycle_chart` to keep every state and trigger the engine relies on.
    """

    def __init__(
        self,
        store: Store,
        queue: Queue,
        registry: Registry | None = None,
        *,
        clock: Clock | None = None,
        worker: str | None = None,
        heartbeat_interval: float = 5.0,
        probe: Probe | None = None,
        eager: bool = True,
        workflow_chart: ChartSource | None = None,
        step_chart: ChartSource | None = None,
        handlers: Iterable[ModuleType | Callable[..., Any]] = (),
        allowed: AllowList | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.registry = registry if registry is not None else Registry()
        self.registry.register(*handlers)
        self._allowed = allowed
        # Plugins first: the built-ins only fill names nobody registered.
        load_registry_plugins(self.registry)
        install_builtins(self.registry)
        self.clock: Clock = clock or SystemClock()
        self.worker = worker
        self.heartbeat_interval = heartbeat_interval
        self.probe = probe
        # Eager dispatch (the default): the settle of a step also claims the next ready step
        # and this process runs it at once, one store write per step instead of two and no
        # trip through the queue. Other ready steps (parallel branches) still go to the queue.
        # A claimed step is EXECUTING from that save on; if this process dies before it ends,
        # it is a lost attempt like any other (stale heartbeat, recovery).
        self.eager: bool = bool(eager)
        # A user's copy of a shipped lifecycle (e.g. with a plugin's effect on a transition).
        self.workflow_chart = CompiledChart(
            lifecycle_chart("workflow", workflow_chart), self.registry
        )
        self.step_chart = CompiledChart(lifecycle_chart("step", step_chart), self.registry)
        #: Traces and metrics (OpenTelemetry API): the first listener, and the job hooks.
        self.telemetry = Telemetry()
        self.listeners: list[Listener] = [self.telemetry.observe]
        self._heartbeats = Heartbeats(
            lambda workflow_id: self.store.heartbeat(workflow_id, self.clock.now()),
            lambda: self.heartbeat_interval,
        )
        self._ended: dict[str, None] = {}  # ids of workflows this engine saw end, oldest first
        self._loaded: weakref.WeakSet[WorkflowDefinition] = weakref.WeakSet()
        # Ids of workflows this engine saw waiting only for signals (see `waiting_for_signal`).
        self._parked: set[str] = set()
        chart = self.workflow_chart.chart
        #: Where a workflow has ended: the final states, and those tagged `halted` (FAILED: only
        #: an operator's restart moves it on).
        self.ended_states = frozenset(
            s for s in chart.top_states if chart.is_final(s) or "halted" in chart.states[s].tags
        )
        queue.bind(self.run_job)

    @property
    def allowed(self) -> AllowList:
        """The handler modules a definition's `handlers:` hint may make this engine import:
        by default only installed packages' (statesaga.security.allowlist), read when first
        needed."""
        if self._allowed is None:
            self._allowed = AllowList.installed()
        return self._allowed

    # -- public API ----------------------------------------------------------------------
    def load(self, definition: WorkflowDefinition) -> None:
        """Register the handler modules a definition names and check every handler exists
        (once per definition object: `start` calls it for every new workflow)."""
        if definition in self._loaded:
            return
        definition.load_handlers(self.registry, self.allowed)
        definition.check_handlers(self.registry)
        wanted = definition.spec.step_lifecycle
        if wanted is not None:
            chart = definition.step_chart()
            if chart is not None and chart.name != self.step_chart.name:
                raise DefinitionError(
                    [
                        definition.lines.problem(
                            ("step_lifecycle",),
                            f"this saga runs on the step lifecycle {chart.name!r} but the engine "
                            f"runs {self.step_chart.name!r}: build it with "
                            "Engine(..., step_chart=definition.step_chart())",
                        )
                    ]
                )
        self._loaded.add(definition)

    def start(
        self,
        definition: WorkflowDefinition,
        input: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowState:
        """Create a workflow from a definition and start it (PENDING --start--> RUNNING)."""
        self.load(definition)
        definition.check_input(input)  # nothing is stored for an input the saga cannot use
        wf = definition.instantiate(input, session_id)
        txn = Txn(wf, by=by)
        self.telemetry.begin(wf)
        self._fire(txn, None, "start")
        self._drain_followups(txn)
        wf.updated_at = self.clock.now()
        self.store.create(wf)
        self._after_commit(txn)
        return wf

    def start_stored(self, workflow_id: str, *, by: str | None = None) -> WorkflowState:
        """Start a PENDING workflow already in the store (PENDING --start--> RUNNING): one built
        by hand or from todos and saved with `store.create`, rather than from a definition.
        Its handlers must already be in this engine's registry."""

        def apply(txn: Txn) -> bool:
            self.telemetry.begin(txn.wf)
            self._fire(txn, None, "start")
            return True

        return self._command(workflow_id, apply, by)

    def run(
        self,
        definition: WorkflowDefinition,
        input: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowState:
        """Start a workflow and wait until it ends (in-process queues run it right here)."""
        wf = self.start(definition, input, session_id=session_id)
        return self.wait(wf.id, timeout)

    def wait(
        self,
        workflow_id: str,
        timeout: float | None = None,
        on_progress: Callable[[WorkflowState], None] | None = None,
        *,
        until_signal: bool = True,
    ) -> WorkflowState:
        """Block until the workflow has ended (or timeout); in-process queues run its jobs
        here. `on_progress` sees the stored document each time the queue checks.

        With `until_signal` (the default) it also returns when the workflow only waits for
        signals (a person's approval): nothing would happen here before someone signals it.
        Without it, an in-process queue keeps running and a wait's timeout fires here."""

        # Workflows this process finished are known without a read; others (finished by
        # workers elsewhere) are polled from the store, at most every _POLL seconds.
        last_read = 0.0

        def done() -> bool:
            nonlocal last_read
            if workflow_id in self._ended:
                return True
            if until_signal and workflow_id in self._parked:
                return True
            now = time.monotonic()
            if on_progress is None and now - last_read < _POLL:
                return False
            last_read = now
            wf = self.store.get(workflow_id)
            if on_progress is not None:
                on_progress(wf)
            return wf.status not in _OPEN or (until_signal and waiting_for_signal(wf))

        self.queue.drain(done, timeout)
        self._ended.pop(workflow_id, None)
        wf = self.store.get(workflow_id)
        if on_progress is not None:
            on_progress(wf)
        return wf

    def cancel(
        self, workflow_id: str, *, force: bool = False, by: str | None = None
    ) -> WorkflowState:
        """Graceful: the step in flight finishes, nothing new starts, then completed steps are
        compensated. Forced: compensate at once; a late result is compensated too."""
        trigger = "force_cancel" if force else "cancel"

        def apply(txn: Txn) -> bool:
            status = txn.wf.status
            if self.has_ended(status.value):
                raise StateError(f"{workflow_id} is already {status.value}; nothing to cancel")
            self._fire(txn, None, trigger)
            return True

        return self._command(workflow_id, apply, by)

    def resume(self, workflow_id: str, *, by: str | None = None) -> WorkflowState:
        """Re-enqueue exactly the work that was in flight (a lost worker's attempt counts as
        timed out, so a zombie finishing it later is rejected)."""

        def apply(txn: Txn) -> bool:
            self._fire(txn, None, "resume")
            return True

        return self._command(workflow_id, apply, by)

    def suspend(
        self, workflow_id: str, *, by: str | None = None, reason: str | None = None
    ) -> WorkflowState:
        def apply(txn: Txn) -> bool:
            self._fire(txn, None, "suspend", reason)
            return True

        return self._command(workflow_id, apply, by)

    def progress(
        self,
        workflow_id: str,
        step: str,
        attempt: int,
        trigger: str,
        detail: str | None = None,
    ) -> WorkflowState:
        """Fire a sub-state trigger of a running step (e.g. CALLING_MODEL -> WAITING_FOR_TOOL
        in a user's extended step lifecycle), saved and recorded in history like any other
        transition. Only triggers that keep the step inside EXECUTING are accepted; the
        attempt must still be the running one."""

        def apply(txn: Txn) -> bool:
            s = txn.wf.step(step)
            if s.status is not StepStatus.EXECUTING or s.attempts != attempt:
                raise StateError(
                    f"{workflow_id}: step {step!r} attempt {attempt} is not running "
                    f"(it is {s.status.value}, attempt {s.attempts})"
                )
            source = _full_state(s.status.value, s.substate)
            self._fire(txn, s, trigger, detail)
            if StepStatus(s.status) is not StepStatus.EXECUTING:
                raise TransitionError(
                    self.step_chart.name,
                    _label(source),
                    trigger,
                    self.step_chart.allowed(source),
                    "a progress trigger must keep the step inside EXECUTING",
                )
            txn.persist = True
            return True

        return self._command(workflow_id, apply, self.worker)

    def get(self, workflow_id: str) -> WorkflowState:
        return self.store.get(workflow_id)

    def has_ended(self, status: str) -> bool:
        """Final, or halted for an operator (FAILED): nothing moves it on by itself."""
        return status in self.ended_states

    def signal(
        self,
        workflow_id: str,
        name: str,
        payload: Any = None,
        *,
        by: str | None = None,
    ) -> WorkflowState:
        """Send a named signal (e.g. `approve`) with a JSON payload to a workflow.

        The step waiting for it completes with the payload as its result; a signal that
        arrives before its step waits is kept and taken when the step gets there. A signal to
        a workflow that has ended, or one no step of the workflow waits for (or will wait for),
        raises StateError and changes nothing. The signal is recorded in the history.
        """
        try:
            summary = json.dumps(payload, sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise StateError(f"the payload of signal {name!r} is not JSON: {exc}") from None
        if len(summary) > _SUMMARY:
            summary = summary[: _SUMMARY - 1] + "…"

        def apply(txn: Txn) -> bool:
            wf = txn.wf
            if self.has_ended(wf.status.value):
                raise StateError(f"{workflow_id} is already {wf.status.value}; it takes no signals")
            awaiting = [s for s in wf.steps if s.kind == "wait" and s.signal == name]
            if not awaiting:
                known = sorted({s.signal for s in wf.steps if s.kind == "wait" and s.signal})
                raise StateError(
                    f"{workflow_id}: no step waits for the signal {name!r}"
                    + (f" (it waits for {', '.join(known)})" if known else " (it has no waits)")
                )
            open_ = [s for s in awaiting if s.status in (StepStatus.PENDING, StepStatus.WAITING)]
            kept = len(wf.signals.get(name, ()))
            if len(open_) <= kept:
                states = ", ".join(f"{s.name} is {s.status.value}" for s in awaiting)
                raise StateError(
                    f"{workflow_id}: no step is left to take the signal {name!r} ({states}"
                    + (f"; {kept} already kept" if kept else "")
                    + ")"
                )
            wf.signals.setdefault(name, []).append(payload)
            self._fire(txn, None, "signal", f"{name} {summary}")
            return True

        return self._command(workflow_id, apply, by)

    def restart(
        self, workflow_id: str, from_step: str, *, reason: str, by: str | None = None
    ) -> WorkflowState:
        """Run a FAILED workflow again from `from_step` (after a fix): the steps before it
        keep their results; it and the steps after it start afresh from their own specs. The
        history records who restarted it, from where and why."""
        if not reason.strip():
            raise StateError("a restart needs a reason (it is kept in the history)")

        def apply(txn: Txn) -> bool:
            wf = txn.wf
            if wf.status is not WorkflowStatus.FAILED:
                raise StateError(
                    f"{workflow_id} is {wf.status.value}; only a FAILED workflow can be restarted"
                )
            names = [s.name for s in wf.steps]
            try:
                start = wf.step(from_step).name
            except KeyError:
                raise StateError(
                    f"{workflow_id} has no step {from_step!r} (steps: {', '.join(names)})"
                ) from None
            kept = names[: names.index(start)]
            for s in wf.steps:
                if s.name in kept and s.status is not StepStatus.COMPLETED:
                    raise StateError(
                        f"{workflow_id}: step {s.name!r} before {start!r} is {s.status.value}, "
                        f"so its result cannot be kept; restart from {s.name!r} or earlier"
                    )
            txn.params["from_step"] = start
            self._fire(txn, None, "restart", f"from {start}: {reason}")
            return True

        return self._command(workflow_id, apply, by)

    # -- jobs ----------------------------------------------------------------------------
    def stop_eager(self) -> None:
        """Claim no next step from now on (a warm shutdown): the step in flight settles and
        the next one goes to the queue for another worker."""
        self.eager = False

    def run_job(self, job: Job) -> None:
        """Run one step, compensation or timer job; stale and duplicate jobs are ignored."""
        if job.kind == "step":
            self._run_step(job)
            return
        with self.telemetry.job(job):
            if job.kind == "compensation":
                self._run_compensation(job)
            elif job.kind == "timer":
                self._run_timer(job)
            else:
                log.error("unknown job kind %r for %s", job.kind, job.workflow_id)

    def _run_step(self, job: Job) -> None:
        def claim(txn: Txn) -> bool:
            step = txn.wf.step(job.step)
            if (
                txn.wf.status is not WorkflowStatus.RUNNING
                or step.status not in (StepStatus.QUEUED, StepStatus.RETRYING)
                or job.attempt != step.attempts + 1
            ):
                log.info(
                    "stale job %s ignored (%s is %s, attempt %s)",
                    _jobname(job),
                    step.name,
                    step.status.value,
                    step.attempts,
                )
                return False
            self._fire(txn, step, "dispatch")
            return True

        with self.telemetry.job(job):
            claimed = self._transact(job.workflow_id, claim, by=self.worker, job=job)
            running = None if claimed is None else self._execute(claimed, job)
        # Eager dispatch: each step the last settle claimed runs here, as its own attempt.
        while running is not None:
            with self.telemetry.job(running[1], claimed=True):
                running = self._execute(*running)

    def _execute(self, claimed: WorkflowState, job: Job) -> tuple[WorkflowState, Job] | None:
        """Run a claimed attempt and settle its outcome on the document the claim saved (no
        second read; a lost revision check re-reads). Returns the next step when the settle
        claimed it (eager dispatch), for this process to run at once."""
        step = claimed.step(job.step)
        if self.probe is not None:
            self.probe("before_action", job)
        outcome, value = self._call(claimed, step, job, compensating=False)
        if self.probe is not None:
            self.probe("after_action", job)
        following: Job | None = None

        def settle(txn: Txn) -> bool:
            nonlocal following
            following = None
            s = txn.wf.step(job.step)
            if s.status is not StepStatus.EXECUTING or s.attempts != job.attempt:
                log.info(
                    "late result of %s ignored (step is %s, attempt %s)",
                    _jobname(job),
                    s.status.value,
                    s.attempts,
                )
                return False
            now = self.clock.now()
            if outcome == "ok":
                s.result = value
                s.error = None
                s.in_doubt = False  # this attempt, with the same key, says what is in force
                s.completed_at = now
                txn.wf.results[s.name] = value
                self._fire(txn, s, "succeed")
            else:
                s.error = value
                self._fire(txn, s, "time_out" if outcome == "timeout" else "fail", value.message)
                if StepStatus(s.status) in _GAVE_UP and txn.wf.error is None:
                    txn.wf.error = s.error
            if self.eager:
                self._drain_followups(txn)
                following = self._claim_eagerly(txn)
            return True

        settled = self._transact(job.workflow_id, settle, by=self.worker, job=job, first=claimed)
        if settled is None or following is None:
            return None
        following = self.telemetry.stamp(following, 0.0, settled)  # its trace, as if queued
        renew = getattr(self.queue, "renew", None)  # e.g. RQ: the next step's own job timeout
        if renew is not None:
            renew(following)
        return settled, following

    def _claim_eagerly(self, txn: Txn) -> Job | None:
        """Dispatch the first step this transaction would enqueue, in the same save, and take
        its job off the list: the process that saves runs it (Temporal's eager activity
        execution). The other ready steps still go to the queue for other workers."""
        if txn.wf.status is not WorkflowStatus.RUNNING:
            return None
        for i, (queued, delay) in enumerate(txn.jobs):
            if queued.kind == "step" and delay == 0:
                step = txn.wf.step(queued.step)
                if step.status is not StepStatus.QUEUED or queued.attempt != step.attempts + 1:
                    continue
                self._fire(txn, step, "dispatch", "claimed by the worker that ran the last step")
                del txn.jobs[i]
                txn.claimed = queued
                return queued
        return None

    def _run_timer(self, job: Job) -> None:
        """A WAITING step's due time: a sleep wakes, a wait times out. A timer that fires
        before the persisted due time (a clock running ahead, an early scheduler) puts itself
        back for the time left."""

        def fire(txn: Txn) -> bool:
            step = txn.wf.step(job.step)
            due = step.next_attempt_at
            if (
                txn.wf.status is not WorkflowStatus.RUNNING
                or step.status is not StepStatus.WAITING
                or job.attempt != step.attempts
                or due is None
            ):
                log.info(
                    "stale timer %s ignored (%s is %s)", _jobname(job), step.name, step.status.value
                )
                return False
            if self.clock.now() < due:
                self._fire(txn, step, "requeue", "the timer fired early")
            elif step.kind == "sleep":
                self._fire(txn, step, "wake")
            else:
                self._fire(txn, step, "wait_timeout", f"no {step.signal!r} signal in time")
            return True

        self._transact(job.workflow_id, fire, by=self.worker, job=job)

    def _run_compensation(self, job: Job) -> None:
        def claim(txn: Txn) -> bool:
            step = txn.wf.step(job.step)
            comp = step.compensation
            if (
                step.status is not StepStatus.COMPENSATING
                or comp is None
                or job.attempt != comp.attempts + 1
            ):
                log.info("stale compensation job %s ignored", _jobname(job))
                return False
            comp.attempts += 1
            comp.started_at = self.clock.now()
            txn.persist = True
            return True

        claimed = self._transact(job.workflow_id, claim, by=self.worker, job=job)
        if claimed is None:
            return
        step = claimed.step(job.step)
        if self.probe is not None:
            self.probe("before_compensation", job)
        outcome, value = self._call(claimed, step, job, compensating=True)
        if self.probe is not None:
            self.probe("after_compensation", job)

        def settle(txn: Txn) -> bool:
            s = txn.wf.step(job.step)
            comp = s.compensation
            if (
                s.status is not StepStatus.COMPENSATING
                or comp is None
                or comp.attempts != job.attempt
            ):
                log.info("late compensation result of %s ignored", _jobname(job))
                return False
            comp.finished_at = self.clock.now()
            if outcome == "ok":
                comp.result = value
                comp.error = None
                self._fire(txn, s, "compensated")
            else:
                comp.error = value
                self._fire(txn, s, "compensation_failed", value.message)
                if StepStatus(s.status) is StepStatus.COMPENSATION_FAILED:
                    txn.wf.reason = (
                        f"compensation of {s.name} failed: {value.type}: {value.message}"
                    )
            return True

        self._transact(job.workflow_id, settle, by=self.worker, job=job, first=claimed)

    def _handler(self, wf: WorkflowState, name: str) -> Handler:
        """A step's handler; one not yet registered may come from the workflow's `handlers`
        hint, only when the allow-list allows that module."""
        if not self.registry.has_handler(name) and wf.handlers:
            refused = self.allowed.load(self.registry, wf.handlers)
            if refused and not self.registry.has_handler(name):
                raise RegistryError(f"no handler registered as {name!r}: {refused[0][1]}")
        return self.registry.get_handler(name)

    def _call(
        self, wf: WorkflowState, step: SagaStep, job: Job, *, compensating: bool
    ) -> tuple[str, Any]:
        """Run the handler; return ("ok", result) or ("error"|"timeout", StepError)."""
        comp = step.compensation
        action = comp.action_type if compensating and comp is not None else step.action_type
        # Copies: the settle saves the document these come from, so what a handler does to
        # its arguments must not reach the store.
        given_input, given_results, given_result = _copied((wf.input, wf.results, step.result))
        scope = {"input": given_input, "steps": given_results, "result": given_result}
        try:
            handler = self._handler(wf, action)
            raw = comp.params if compensating and comp is not None else step.params
            # An action whose outcome is unknown (its worker was lost) is undone without a
            # result: its `${result...}` references resolve to None and the compensation finds
            # the effect by its idempotency key instead.
            lenient = {"result"} if compensating and step.result is None else set()
            params = resolve_params(raw, scope, missing_ok=lenient)
        except (RegistryError, KeyError) as exc:
            return "error", StepError(
                type=type(exc).__name__, message=str(exc), attempt=job.attempt
            )
        operation = f"{wf.id}:{step.name}{':undo' if compensating else ''}"
        ctx = StepContext(
            workflow_id=wf.id,
            step=step.name,
            attempt=job.attempt,
            params=params,
            input=given_input,
            results=given_results,
            idempotency_key=operation,
            attempt_key=f"{operation}:{job.attempt}",
            session_id=wf.session_id,
            compensating=compensating,
            result=given_result,
            resumed_from=_last_substate(wf, step, job.attempt)
            if self.step_chart.hierarchical and not compensating
            else None,
            _beat=lambda: self.store.heartbeat(wf.id, self.clock.now()),
            _progress=None
            if compensating
            else lambda trigger, detail=None: self.progress(
                wf.id, step.name, job.attempt, trigger, detail
            ),
        )
        timeout = None if compensating else step.timeout
        if self.heartbeat_interval > 0:
            self._heartbeats.add(wf.id)
        try:
            return "ok", invoke(handler.func, handler.is_async, ctx, timeout)
        except HandlerTimeout:
            return "timeout", StepError(
                type="TimeoutError",
                message=f"{step.name} timed out after {timeout}s",
                attempt=job.attempt,
            )
        except Exception as exc:
            return "error", StepError(
                type=type(exc).__name__,
                message=str(exc),
                traceback="".join(traceback.format_exception(exc)[-3:])[-2000:],
                attempt=job.attempt,
            )
        finally:
            self._heartbeats.discard(wf.id)

    def _command(
        self, workflow_id: str, apply: Callable[[Txn], bool], by: str | None
    ) -> WorkflowState:
        wf = self._transact(workflow_id, apply, by=by)
        assert wf is not None  # commands always apply or raise
        return wf

    # -- the transaction -----------------------------------------------------------------
    def _transact(
        self,
        workflow_id: str,
        apply: Callable[[Txn], bool],
        *,
        by: str | None = None,
        job: Job | None = None,
        first: WorkflowState | None = None,
    ) -> WorkflowState | None:
        """Load, apply on a working copy, save with the revision check, then run deferred
        effects. A lost revision check re-runs `apply` on the fresh document. Returns the saved
        document, or None when `apply` decided there was nothing to do. `first` is a document
        this process saved itself, used instead of the first read (its revision still checks
        that nothing was saved since)."""
        for _ in range(_CONFLICT_RETRIES):
            wf, first = (first, None) if first is not None else (self.store.get(workflow_id), None)
            txn = Txn(wf, by=by)
            if not apply(txn):
                return None
            self._drain_followups(txn)
            if not txn.persist:
                self._after_commit(txn)
                return wf
            wf.updated_at = self.clock.now()
            try:
                self.store.save(wf)
            except ConflictError:
                log.debug("revision conflict on %s, re-evaluating", workflow_id)
                continue
            if (
                self.probe is not None
                and job is not None
                and (txn.deferred or txn.jobs or txn.claimed)
            ):
                self.probe("after_save", job)
            self._after_commit(txn)
            return wf
        raise ConflictError(workflow_id, None, None)

    def _fire(
        self, txn: Txn, step: SagaStep | None, trigger: str, detail: str | None = None
    ) -> None:
        """Fire one trigger on the workflow (step None) or a step, and run its effects."""
        wf = txn.wf
        compiled = self.workflow_chart if step is None else self.step_chart
        holder: WorkflowState | SagaStep = wf if step is None else step
        source = _full_state(holder.status.value, holder.substate)
        ctx = TransitionContext(self, txn, step)
        spec, reached = compiled.fire_to(source, trigger, ctx)
        now = self.clock.now()
        dest = top(reached)
        holder.substate = below_top(reached)
        if step is None:
            wf.status = WorkflowStatus(dest)
            if self.has_ended(dest):
                wf.finished_at = now
        else:
            step.status = StepStatus(dest)
        entry = HistoryEntry(
            at=now,
            chart=compiled.name,
            trigger=trigger,
            source=_label(source),
            dest=_label(reached),
            step=step.name if step else None,
            attempt=step.attempts if step else None,
            by=txn.by,
            detail=detail,
        )
        wf.record(entry)  # bounded: repeats fold past the history limit
        txn.entries.append(entry)
        ctx.entry = entry
        for ref in spec.effects:
            deferred = self.registry.get_effect(ref.name).func(ctx, **ref.args)
            if deferred is not None:
                txn.deferred.append(deferred)
        if step is not None:
            entry.attempt = step.attempts  # `dispatch` starts the next attempt in its effects

    def _drain_followups(self, txn: Txn) -> None:
        fired = 0
        while txn.followups:
            trigger = txn.followups.popleft()
            fired += 1
            if fired > _FOLLOWUPS_MAX:
                # A table (or a plugin's effect) that keeps asking for the next trigger would
                # grow the history without end in one event: refuse to save it.
                raise StateError(
                    f"{txn.wf.id}: more than {_FOLLOWUPS_MAX} workflow triggers in one event "
                    f"(the last: {trigger!r} in {txn.wf.status.value}); the tables loop"
                )
            if not self.workflow_chart.can_fire(txn.wf.status.value, trigger):
                # A final workflow ignores late news (e.g. a step finishing after FAILED).
                log.info("%s: %s ignored in %s", txn.wf.id, trigger, txn.wf.status.value)
                continue
            try:
                self._fire(txn, None, trigger)
            except TransitionError as exc:
                log.info("%s: %s", txn.wf.id, exc)

    def _after_commit(self, txn: Txn) -> None:
        if txn.wf.status not in _OPEN:
            self._ended[txn.wf.id] = None
            while len(self._ended) > _ENDED_KEPT:  # forget the oldest; waiters re-read the store
                self._ended.pop(next(iter(self._ended)))
        else:
            self._ended.pop(txn.wf.id, None)  # a restarted workflow runs again
        if waiting_for_signal(txn.wf):
            self._parked.add(txn.wf.id)
        else:
            self._parked.discard(txn.wf.id)
        for queued, delay in txn.jobs:
            self.queue.enqueue(self.telemetry.stamp(queued, delay, txn.wf), delay)
        for action in txn.deferred:
            action()
        for entry in txn.emitted:
            events.info(
                "%s %s%s: %s -> %s",
                txn.wf.id,
                entry.chart,
                f" {entry.step}" if entry.step else "",
                entry.source,
                entry.dest,
            )
        for entry in txn.entries:
            for listener in self.listeners:
                try:
                    listener(txn.wf, entry)
                except Exception:  # a display must never break the saga
                    log.exception("listener failed")

    # -- helpers the built-in effects use ------------------------------------------------
    def step_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        return Job(
            kind="step",
            workflow_id=wf.id,
            step=step.name,
            attempt=step.attempts + 1,
            timeout=step.timeout,
            description=f"{wf.name} {wf.id} step {step.name} attempt {step.attempts + 1}",
        )

    def timer_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        """The job that fires a WAITING step's due time; its token is the wait's attempt."""
        what = "wake" if step.kind == "sleep" else "timeout"
        return Job(
            kind="timer",
            workflow_id=wf.id,
            step=step.name,
            attempt=step.attempts,
            description=f"{wf.name} {wf.id} {what} {step.name} attempt {step.attempts}",
        )

    def compensation_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        assert step.compensation is not None
        attempt = step.compensation.attempts + 1
        return Job(
            kind="compensation",
            workflow_id=wf.id,
            step=step.name,
            attempt=attempt,
            timeout=None,
            description=f"{wf.name} {wf.id} undo {step.name} attempt {attempt}",
        )


_POLL = 0.05
_FOLLOWUPS_MAX = 1000
_SUMMARY = 200  # characters of a signal's payload kept in the history
_GAVE_UP = frozenset({StepStatus.FAILED, StepStatus.IN_DOUBT})
_BUSY_STEP = frozenset(
    {StepStatus.QUEUED, StepStatus.EXECUTING, StepStatus.RETRYING, StepStatus.COMPENSATING}
)


def waiting_for_signal(wf: WorkflowState) -> bool:
    """Running, with nothing queued or running and no sleep under way: only a signal (or a
    wait's timeout) can move it on."""
    if wf.status is not WorkflowStatus.RUNNING:
        return False
    waiting = False
    for s in wf.steps:
        if s.status in _BUSY_STEP or (s.status is StepStatus.WAITING and s.kind == "sleep"):
            return False
        waiting = waiting or (s.status is StepStatus.WAITING and s.kind == "wait")
    return waiting


_ENDED_KEPT = 10_000
_OPEN = frozenset(ACTIVE_WORKFLOW | {WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED})


def _last_substate(wf: WorkflowState, step: SagaStep, attempt: int) -> str | None:
    """Where an earlier attempt of this step got to inside EXECUTING, if anywhere."""
    prefix = f"{StepStatus.EXECUTING.value}."
    for entry in reversed(wf.history):
        if entry.step == step.name and (entry.attempt or 0) < attempt:
            if entry.dest.startswith(prefix):
                return entry.dest[len(prefix) :]
    return None


def _copied(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, tuples, scalars), faster than
    copy.deepcopy for the small documents handlers get; anything else is deep-copied."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_copied(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)


def _full_state(status: str, substate: list[str]) -> State:
    if not substate:
        return status
    paths = [f"{status}.{sub}" for sub in substate]
    return paths[0] if len(paths) == 1 else paths


def _label(state: State) -> str:
    return state if isinstance(state, str) else ",".join(state)


def _jobname(job: Job) -> str:
    return f"{job.kind}:{job.workflow_id}:{job.step}#{job.attempt}"
