"""The Engine: runs sagas by reacting to one event at a time (start, a job's outcome, cancel,
resume, a signal).

The Engine is a facade. Building one gathers what runs a saga into one
statesaga.runtime.runtime.Runtime value (the store, queue, registry and clock passed in, the
two compiled lifecycles, telemetry, heartbeats) and hands each kind of work to one small
collaborator in statesaga.runtime that takes that value: `transaction` (the kernel every
event goes through: load, fire on a working copy, save with the revision check, then act
outside), `commands` (operator commands and their preconditions, with `admission` checking a
definition before its first start), `jobs` (claim, call, settle; eager dispatch), `handlers`
(calling a handler) and `observe` (waiting, listeners). Which triggers it fires and which
states it groups together come from the tables (statesaga.vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

from .charts.machine import CompiledChart
from .definitions.load import WorkflowDefinition
from .models import SagaStep, WorkflowState
from .observability.telemetry import Telemetry
from .plugins import ChartSource, lifecycle_chart, load_registry_plugins
from .ports import Clock, Job, Queue, Store
from .registry import Registry
from .runtime import jobs as _jobs
from .runtime.clock import store_clock
from .runtime.commands import Commands
from .runtime.effects import install_builtins
from .runtime.heartbeat import Heartbeats
from .runtime.jobs import Jobs
from .runtime.observe import Listener, Observer, waiting_for_signal
from .runtime.runtime import Probe, Runtime
from .runtime.transaction import Kernel, TransitionContext, Txn, texts
from .security.allowlist import AllowList
from .vocabulary import check


class Engine:
    """Runs sagas: `start` a definition, then each job's outcome moves it on.

    Collaborators are passed in: a Store, a Queue (bound to this engine's `run_job`), a
    Registry of handlers and a Clock. The engine works on its own copy of the registry, to
    which it adds the effects and guards of installed plugins, then the built-in ones (the
    caller's registry is left as it was). `workflow_chart` / `step_chart` replace a shipped
    lifecycle with a user's copy of it (a Chart, a YAML path or a dict), checked by
    `plugins.lifecycle_chart` to keep every state and trigger the engine relies on, and by
    `vocabulary.check` to keep the tags it reads. `Engine.over(runtime)` builds the facade
    on a Runtime made elsewhere (the simulation's, with its own ports).
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
        own = registry.copy() if registry is not None else Registry()
        own.register(*handlers)
        # Plugins first: the built-ins only fill names nobody registered.
        load_registry_plugins(own)
        install_builtins(own)
        runtime = Runtime(
            store,
            queue,
            own,
            # A user's copy of a shipped lifecycle (e.g. with a plugin's effect on a transition).
            _compiled("workflow", workflow_chart, own),
            _compiled("step", step_chart, own),
            # The store's clock unless told otherwise: leases and due times on one clock.
            clock=clock or store_clock(store),
            worker=worker,
            heartbeat_interval=heartbeat_interval,
            probe=probe,
            eager=eager,
            allowed=allowed,
        )
        self._attach(runtime)

    @classmethod
    def over(cls, runtime: Runtime) -> Engine:
        """The facade on a Runtime already built (its registry already holds the built-in
        effects, its charts are compiled): no plugin is scanned again."""
        engine = cls.__new__(cls)
        engine._attach(runtime)
        return engine

    def _attach(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.kernel = Kernel(runtime)
        self.commands = Commands(runtime, self.kernel)
        self.jobs = Jobs(runtime, self.kernel, self.commands.progress)
        runtime.queue.bind(self.run_job)

    # -- what the runtime holds ------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def queue(self) -> Queue:
        return self.runtime.queue

    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def workflow_chart(self) -> CompiledChart:
        return self.runtime.workflow_chart

    @property
    def step_chart(self) -> CompiledChart:
        return self.runtime.step_chart

    @property
    def telemetry(self) -> Telemetry:
        return self.runtime.telemetry

    @property
    def listeners(self) -> list[Listener]:
        """Called after each save, for each transition (telemetry's first); append a display."""
        return self.runtime.listeners

    @property
    def observer(self) -> Observer:
        return self.runtime.observer

    @property
    def heartbeats(self) -> Heartbeats:
        return self.runtime.heartbeats

    @property
    def worker(self) -> str | None:
        return self.runtime.worker

    @property
    def heartbeat_interval(self) -> float:
        return self.runtime.heartbeat_interval

    @property
    def ended_states(self) -> frozenset[str]:
        return self.runtime.ended_states

    @property
    def eager(self) -> bool:
        """See Runtime.eager."""
        return self.runtime.eager

    @eager.setter
    def eager(self, value: bool) -> None:
        self.runtime.eager = bool(value)

    @property
    def probe(self) -> Probe | None:
        return self.runtime.probe

    @probe.setter
    def probe(self, value: Probe | None) -> None:
        self.runtime.probe = value

    @property
    def allowed(self) -> AllowList:
        """The handler modules a definition's `handlers:` hint may make this engine import:
        by default only installed packages' (statesaga.security.allowlist), read when first
        needed."""
        return self.runtime.allow_list()

    # -- definitions and commands (statesaga.runtime.admission, .commands) ----------------
    def load(self, definition: WorkflowDefinition) -> None:
        """Register the handler modules a definition names and check every handler exists
        (once per definition object: `start` calls it for every new workflow)."""
        self.commands.admission.admit(definition)

    def start(
        self,
        definition: WorkflowDefinition,
        input: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        by: str | None = None,
    ) -> WorkflowState:
        """Create a workflow from a definition and start it (PENDING --start--> RUNNING)."""
        return self.commands.start(definition, input, session_id, by)

    def start_stored(self, workflow_id: str, *, by: str | None = None) -> WorkflowState:
        """Start a PENDING workflow already in the store (PENDING --start--> RUNNING): one built
        by hand or from todos and saved with `store.create`, rather than from a definition.
        Its handlers must already be in this engine's registry."""
        return self.commands.start_stored(workflow_id, by)

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

    def cancel(
        self, workflow_id: str, *, force: bool = False, by: str | None = None
    ) -> WorkflowState:
        """Graceful: the step in flight finishes, nothing new starts, then completed steps are
        compensated. Forced: compensate at once; a late result is compensated too."""
        return self.commands.cancel(workflow_id, force, by)

    def resume(self, workflow_id: str, *, by: str | None = None) -> WorkflowState:
        """Re-enqueue exactly the work that was in flight (a lost worker's attempt counts as
        timed out, so a zombie finishing it later is rejected)."""
        return self.commands.resume(workflow_id, by)

    def suspend(
        self, workflow_id: str, *, by: str | None = None, reason: str | None = None
    ) -> WorkflowState:
        return self.commands.suspend(workflow_id, by, reason)

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
        return self.commands.progress(workflow_id, step, attempt, trigger, detail)

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
        return self.commands.signal(workflow_id, name, payload, by)

    def restart(
        self, workflow_id: str, from_step: str, *, reason: str, by: str | None = None
    ) -> WorkflowState:
        """Run a FAILED workflow again from `from_step` (after a fix): the steps before it
        keep their results; it and the steps after it start afresh from their own specs. The
        history records who restarted it, from where and why."""
        return self.commands.restart(workflow_id, from_step, reason, by)

    # -- observation (statesaga.runtime.observe) -------------------------------------------
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
        return self.observer.wait(workflow_id, timeout, on_progress, until_signal)

    def get(self, workflow_id: str) -> WorkflowState:
        texts(workflow_id=workflow_id)  # an id no store could hold: one line, not the store's
        return self.store.get(workflow_id)

    def has_ended(self, status: str) -> bool:
        """Final, or halted for an operator (FAILED): nothing moves it on by itself."""
        return self.runtime.has_ended(status)

    # -- jobs (statesaga.runtime.jobs) -----------------------------------------------------
    def stop_eager(self) -> None:
        """Claim no next step from now on (a warm shutdown): the step in flight settles and
        the next one goes to the queue for another worker."""
        self.eager = False

    def run_job(self, job: Job) -> None:
        """Run one step, compensation or timer job; stale and duplicate jobs are ignored."""
        self.jobs.run(job)

    def step_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        return _jobs.step_job(wf, step)

    def timer_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        """The job that fires a WAITING step's due time; its token is the wait's attempt."""
        return _jobs.timer_job(wf, step)

    def compensation_job(self, wf: WorkflowState, step: SagaStep) -> Job:
        return _jobs.compensation_job(wf, step)


def _compiled(name: str, source: ChartSource | None, registry: Registry) -> CompiledChart:
    """The `name` lifecycle this engine runs, checked against what the engine relies on."""
    chart = lifecycle_chart(name, source)
    check(chart, name)
    return CompiledChart(chart, registry)


__all__ = [
    "Engine",
    "Runtime",
    "Listener",
    "Probe",
    "TransitionContext",
    "Txn",
    "waiting_for_signal",
]
