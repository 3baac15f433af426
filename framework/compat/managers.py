"""The origin design's API: async managers over the Engine and a Store.

Users of the origin design (an agent platform) `await` these names. Each method is a thin
layer: it hands the blocking call to a thread (`asyncio.to_thread`) and lets the engine do the
work. Retries and backoff come from the step's RetryPolicy, compensation from the workflow
lifecycle's `compensate` effect, recovery from the `resume` transition: nothing here decides
a state change itself.

With the in-process queue (`inline://`) the jobs run in the thread that drives the queue, so
`execute_step`, `compensate_all`, `resume` and `cancel` drive it until their work is done;
with the RQ queue they wait while `statesaga worker` processes run the jobs. Drive one
in-process queue from one coroutine at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import worker
from ..app import EngineOptions
from ..engine import Engine
from ..errors import NotFoundError, RegistryError, StateError, StatesagaError
from ..models import (
    CompensationAction,
    CompensationStrategy,
    RetryPolicy,
    SagaStep,
    StepError,
    StepStatus,
    WorkflowState,
    WorkflowStatus,
    new_id,
)
from ..plugins import DEFAULT_QUEUE
from ..ports import Clock, Queue, Store
from ..registry import Registry
from ..runtime import recovery
from ..runtime.clock import store_clock
from ..runtime.heartbeat import heartbeat_cutoff
from ..vocabulary import (
    STEP_ROLLED_BACK,
    STEP_SETTLED,
    STEP_TO_UNDO,
    STEP_UNDOING,
    WORKFLOW_RECOVERABLE,
    WORKFLOW_ROLLED_BACK,
)

# The name it logged under before the tree's split: operators filter and alert on it.
log = logging.getLogger("statesaga.managers")

#: Workflows a lost agent session can pick up again: started, not finished.
RECOVERABLE = WORKFLOW_RECOVERABLE
#: Being undone or undone (a step that had completed still has its result).
_UNWOUND = STEP_UNDOING | STEP_ROLLED_BACK
#: Too late to attach a compensation: settled, and not a step an unwinding saga undoes.
_TOO_LATE_TO_UNDO = STEP_SETTLED - STEP_TO_UNDO


class StepExecutionError(StatesagaError):
    """Raised by `WorkflowExecutor.execute_step` when the step did not complete."""

    def __init__(self, workflow: WorkflowState, step: SagaStep) -> None:
        self.workflow = workflow
        self.step = step
        self.error: StepError | None = step.error
        why = f"{step.error.type}: {step.error.message}" if step.error else "no error recorded"
        super().__init__(
            f"{workflow.id} step {step.name} is {step.status.value} "
            f"after {step.attempts} attempt(s) ({why})"
        )


def _refresh(target: WorkflowState, source: WorkflowState) -> None:
    """Copy a stored document into the caller's object, keeping the caller's SagaStep objects
    (origin code holds `step` references across calls and reads their status)."""
    old_steps = {s.name: s for s in target.steps}
    for name in WorkflowState.model_fields:
        if name != "steps":
            setattr(target, name, getattr(source, name))
    steps: list[SagaStep] = []
    for fresh in source.steps:
        kept = old_steps.get(fresh.name)
        if kept is None:
            steps.append(fresh)
            continue
        for name in SagaStep.model_fields:
            setattr(kept, name, getattr(fresh, name))
        steps.append(kept)
    target.steps = steps


async def _drain(engine: Engine, until: Callable[[], bool], timeout: float | None) -> None:
    await asyncio.to_thread(engine.queue.drain, until, timeout)


# -- state -------------------------------------------------------------------------------
class WorkflowStateManager:
    """Workflow documents in a Store, with the store's revision check on every update."""

    def __init__(self, store: Store, *, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or store_clock(store)

    async def initialize(self) -> None:
        """Create the store's tables or collections (idempotent)."""
        await asyncio.to_thread(self.store.initialize)

    async def create(self, workflow: WorkflowState) -> WorkflowState:
        """Store a new document at revision 1; an existing id raises ConflictError."""
        await asyncio.to_thread(self.store.create, workflow)
        return workflow

    async def get(self, workflow_id: str) -> WorkflowState | None:
        """The stored document, or None when there is none (the origin design's contract)."""
        try:
            return await asyncio.to_thread(self.store.get, workflow_id)
        except NotFoundError:
            return None

    async def update(self, workflow: WorkflowState) -> WorkflowState:
        """Save the caller's copy; ConflictError (and nothing written) when someone else saved
        since it was read. Status changes belong to the engine: use the other managers."""
        workflow.updated_at = self.clock.now()
        await asyncio.to_thread(self.store.save, workflow)
        return workflow

    async def list_by_session(self, session_id: str) -> list[WorkflowState]:
        """The session's workflows, oldest first."""
        return await asyncio.to_thread(self.store.list, session_id=session_id)

    async def update_heartbeat(self, workflow_id: str) -> None:
        """Record that the workflow's worker is alive (does not change the revision)."""
        await asyncio.to_thread(self.store.heartbeat, workflow_id, self.clock.now())


# -- execution ---------------------------------------------------------------------------
class RQTaskWrapper:
    """The job function of the RQ queue under its origin name.

    Every RQ job of statesaga calls `statesaga.worker.run_job` (`FUNCTION`) with a JSON payload
    (`Job.to_dict()`); `statesaga worker` processes serve those calls. An RQTaskWrapper runs a
    payload through that very function with this engine as the runner, e.g. in a process that
    takes jobs from RQ itself. Stale and duplicate payloads are ignored by the engine's
    attempt-token check.
    """

    #: The dotted name RQ jobs call (the queue adapter enqueues exactly this).
    FUNCTION = f"{worker.run_job.__module__}.{worker.run_job.__qualname__}"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, payload: dict[str, Any]) -> None:
        with worker.serving(self.engine.run_job):
            worker.run_job(dict(payload))


class WorkflowExecutor:
    """Runs steps through the engine: `WorkflowExecutor(engine)`, or
    `WorkflowExecutor(store, queue, registry)` to build one (queue default `inline://`)."""

    def __init__(
        self,
        engine: Engine | Store,
        queue: Queue | None = None,
        registry: Registry | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(engine, Engine):
            self.engine = engine
        else:
            # inline:// itself, not $STATESAGA_QUEUE: a library call reads no environment.
            self.engine = EngineOptions(
                store=engine,
                queue=DEFAULT_QUEUE if queue is None else queue,
                registry=registry,
                clock=clock,
            ).build()
        # The caller drives the saga one step at a time (execute_step, then decides), so each
        # step goes through the queue: no settle claims the next step before it is asked for.
        self.engine.eager = False

    @property
    def store(self) -> Store:
        return self.engine.store

    def register_handler(self, action_type: str, handler: Callable[..., Any]) -> None:
        """Register (or replace) the handler of an action type. A handler takes one
        `StepContext` (params, input, earlier results, idempotency key); sync or async."""
        self.engine.registry.register_handler(action_type, handler, replace=True)

    def task_wrapper(self) -> RQTaskWrapper:
        return RQTaskWrapper(self.engine)

    async def execute_step(
        self,
        workflow: WorkflowState,
        step: SagaStep | str,
        results: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one step through its lifecycle and return its result.

        The workflow is stored if it is not yet, and started if it is PENDING; then the queue
        is driven until the step has settled (retries wait out the RetryPolicy's exponential
        backoff on the way). Raises StepExecutionError when the step ends FAILED (or cannot
        run any more, e.g. SKIPPED). Steps run in the order of their dependencies: asking for
        a later step first runs the earlier ones.

        `workflow` and `step` are refreshed in place from the stored document; `results`, if
        given, is updated with every step result the engine has stored (the engine itself reads
        earlier results from the document, `workflow.results`).
        """
        engine, store = self.engine, self.engine.store
        name = step if isinstance(step, str) else step.name

        def prepare() -> None:
            try:
                stored = store.get(workflow.id)
            except NotFoundError:
                store.create(workflow)
                stored = workflow
            if stored.status is WorkflowStatus.PENDING:
                engine.start_stored(workflow.id)

        def settled() -> bool:
            wf = store.get(workflow.id)
            return StepStatus(wf.step(name).status) in STEP_SETTLED or engine.has_ended(
                wf.status.value
            )

        await asyncio.to_thread(prepare)
        await _drain(engine, settled, timeout)
        stored = await asyncio.to_thread(store.get, workflow.id)
        _refresh(workflow, stored)
        if results is not None:
            results.update(stored.results)
        done = stored.step(name)
        if done.status is StepStatus.COMPLETED or (
            done.status in _UNWOUND and done.completed_at is not None
        ):
            return done.result
        if done.status not in STEP_SETTLED and not engine.has_ended(stored.status.value):
            still = f"{workflow.id} step {name} is still {done.status.value}"
            if timeout is not None:
                raise TimeoutError(f"{still} after {timeout}s")
            # The queue ran dry with the step unsettled: its job was lost (recovery resumes it).
            raise StateError(f"{still} and no job is left to run it; resume the workflow")
        raise StepExecutionError(stored, done)


# -- heartbeats --------------------------------------------------------------------------
@dataclass
class _Beat:
    step_id: str
    task: asyncio.Task[None]


class HeartbeatManager:
    """Heartbeats from the agent's side: one asyncio task per workflow beating into the store
    (the engine beats on its own while a handler runs; recovery looks for stale beats)."""

    def __init__(self, store: Store, *, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or store_clock(store)
        self._beats: dict[str, _Beat] = {}

    @property
    def active(self) -> dict[str, str]:
        """workflow id -> step id of every running heartbeat."""
        return {wf: b.step_id for wf, b in self._beats.items() if not b.task.done()}

    async def _beat(self, workflow_id: str) -> None:
        await asyncio.to_thread(self.store.heartbeat, workflow_id, self.clock.now())

    async def start(self, workflow_id: str, step_id: str, interval: float = 5.0) -> None:
        """Beat now (so a missing workflow fails here, with NotFoundError), then every
        `interval` seconds until `stop`. Starting again replaces the previous beat."""
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval}")
        await self.stop(workflow_id)
        await self._beat(workflow_id)

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self._beat(workflow_id)
                except Exception:  # a missed beat is what recovery is for; keep beating
                    log.warning("heartbeat for %s failed", workflow_id, exc_info=True)

        task = asyncio.create_task(loop(), name=f"statesaga-heartbeat-{workflow_id}")
        self._beats[workflow_id] = _Beat(step_id, task)

    async def stop(self, workflow_id: str) -> None:
        """Stop the workflow's heartbeat (nothing happens if there is none)."""
        beat = self._beats.pop(workflow_id, None)
        if beat is None:
            return
        beat.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat.task

    async def stop_all(self) -> None:
        for workflow_id in list(self._beats):
            await self.stop(workflow_id)

    async def check_all_timed_out(self, timeout: float = 300.0) -> list[WorkflowState]:
        """Active workflows (running, cancelling, compensating) whose last heartbeat is older
        than `timeout` seconds, or missing."""
        before = heartbeat_cutoff(self.clock, timeout)
        return await asyncio.to_thread(self.store.list_stale, before, recovery.STALE_STATES)


# -- saga --------------------------------------------------------------------------------
class SagaManager:
    """Compensations, run by the engine: `create_compensation` records what undoes a step
    on the stored document; `compensate_all` unwinds through the workflow lifecycle."""

    strategies = tuple(CompensationStrategy)

    def __init__(self, engine: Engine, *, retry: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy(max_attempts=5)
        self._compensations: dict[str, str] = {}

    def register_compensation_handler(
        self, action_type: str, handler: Callable[..., Any], *, name: str | None = None
    ) -> str:
        """Register the handler that undoes `action_type` (a `StepContext` handler; its
        `result` is the result of the action being undone). Returns its registry name."""
        registered = name or f"{action_type}.compensate"
        self.engine.registry.register_handler(registered, handler, replace=True)
        self._compensations[action_type] = registered
        return registered

    def compensation_for(self, action_type: str) -> str:
        try:
            return self._compensations[action_type]
        except KeyError:
            known = ", ".join(sorted(self._compensations)) or "none"
            raise RegistryError(
                f"no compensation handler registered for {action_type!r}; registered: {known}"
            ) from None

    async def create_compensation(
        self,
        workflow: WorkflowState,
        step: SagaStep | str,
        params: dict[str, Any] | None = None,
    ) -> CompensationAction:
        """Attach a CompensationAction (`COMP-YYYYMMDD-xxxxxxxx`) for the step's action type to
        the step, saved on the stored document with the revision check (or on `workflow` alone
        if it is not stored yet). A step that already has one keeps it and it is returned."""
        name = step if isinstance(step, str) else step.name

        def attach(wf: WorkflowState) -> CompensationAction | None:
            s = wf.step(name)
            if s.compensation is not None:
                return s.compensation
            if s.status in _TOO_LATE_TO_UNDO:
                raise StateError(f"{wf.id} step {name} is {s.status.value}; too late to undo")
            s.compensation = CompensationAction(
                id=new_id("COMP", self.engine.clock.now()),
                step_id=s.name,
                action_type=self.compensation_for(s.action_type),
                params=dict(params or {}),
                retry=self.retry,
            )
            return None

        def save() -> CompensationAction:
            try:
                # The kernel's revision-checked load-modify-save: attach again on a conflict.
                stored = self.engine.kernel.update(workflow.id, lambda wf: attach(wf) is None)
            except NotFoundError:  # not stored yet: the caller's object is the document
                existing = attach(workflow)
                comp = workflow.step(name).compensation
                assert comp is not None
                return existing or comp
            _refresh(workflow, stored)
            comp = stored.step(name).compensation
            assert comp is not None
            return comp

        return await asyncio.to_thread(save)

    async def compensate_all(
        self, workflow: WorkflowState, *, timeout: float | None = None
    ) -> WorkflowState:
        """Unwind the saga now: the engine's forced cancel (`force_cancel`), which skips the
        steps not started and compensates the completed ones by the workflow's strategy; then
        wait until it ends (COMPENSATED, or FAILED if a compensation cannot succeed).

        A workflow already unwound is returned as it is; a COMPLETED or FAILED one raises
        StateError (there is no way back out of a final state).
        """
        engine = self.engine
        stored = await asyncio.to_thread(engine.store.get, workflow.id)
        if stored.status not in WORKFLOW_ROLLED_BACK:
            if stored.status is not WorkflowStatus.COMPENSATING:
                await asyncio.to_thread(lambda: engine.cancel(workflow.id, force=True))
            stored = await asyncio.to_thread(engine.wait, workflow.id, timeout)
        _refresh(workflow, stored)
        return stored


# -- recovery ----------------------------------------------------------------------------
class WorkflowRecoveryManager:
    """Picking up a lost session's workflows: find them, resume them, or cancel them
    (statesaga.runtime.recovery does the work; this is its async face).

    `timeout`: seconds without a heartbeat after which a running workflow counts as lost. It
    must exceed the workers' heartbeat interval: resuming a workflow whose worker is alive
    would time out the attempt that worker is running.
    """

    def __init__(self, engine: Engine, *, timeout: float = 30.0) -> None:
        self.engine = engine
        self.timeout = timeout

    async def get_recoverable_workflows(self, session_id: str | None = None) -> list[WorkflowState]:
        """The session's (or every session's) running workflows whose heartbeat is stale,
        plus the suspended ones; oldest first."""
        engine = self.engine
        return await asyncio.to_thread(
            recovery.get_recoverable_workflows,
            engine.store,
            self.timeout,
            session_id,
            clock=engine.clock,
        )

    async def resume(
        self, workflow_id: str, *, wait: bool = True, timeout: float | None = None
    ) -> WorkflowState:
        """Re-enqueue exactly what was in flight (the engine's `resume`: a lost attempt times
        out and is retried); with `wait`, drive or wait for the workflow until it ends."""
        worker = recovery.Recovery(self.engine, action=recovery.RecoveryAction.RESUME)
        state = await asyncio.to_thread(worker.recover, workflow_id)
        if wait:
            state = await asyncio.to_thread(self.engine.wait, workflow_id, timeout)
        return state

    async def cancel(
        self,
        workflow_id: str,
        force: bool = True,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> WorkflowState:
        """Cancel through the engine. Forced: compensate at once, the lost attempt in flight
        included (recovery's cancel: `force_cancel`, then `resume` to put back what the queue
        lost); graceful: the step in flight finishes first. With `wait`, drive or wait for the
        workflow until it ends."""
        engine = self.engine
        if force:

            def forced() -> WorkflowState:
                # recovery.Recovery.recover(CANCEL), except that a cancel which already ended
                # the saga (nothing was in flight) is not followed by a resume it cannot take.
                wf = engine.get(workflow_id)
                if wf.status is not WorkflowStatus.COMPENSATING:
                    wf = engine.cancel(workflow_id, force=True, by="recovery")
                if wf.status is WorkflowStatus.COMPENSATING:
                    wf = engine.resume(workflow_id, by="recovery")
                return wf

            state = await asyncio.to_thread(forced)
        else:
            state = await asyncio.to_thread(lambda: self.engine.cancel(workflow_id))
        if wait:
            state = await asyncio.to_thread(self.engine.wait, workflow_id, timeout)
        return state


__all__ = [
    "RECOVERABLE",
    "CompensationStrategy",
    "HeartbeatManager",
    "RQTaskWrapper",
    "SagaManager",
    "StepExecutionError",
    "WorkflowExecutor",
    "WorkflowRecoveryManager",
    "WorkflowStateManager",
]
