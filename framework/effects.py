"""The built-in effects and guards the shipped lifecycle tables name.

An effect changes only the working copy and returns what must happen outside (enqueue) as a
callable, run after the save. A guard is a predicate on the working copy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from .models import CompensationStrategy, SagaStep, StepStatus, WorkflowStatus

if TYPE_CHECKING:
    from .engine import TransitionContext
    from .registry import Registry

Deferred = Callable[[], None] | None

_UNDONE = frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED})
_NOT_STARTED = frozenset({StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RETRYING})
_BUSY = frozenset({StepStatus.EXECUTING, StepStatus.COMPENSATING})


def _step(ctx: TransitionContext) -> SagaStep:
    if ctx.step is None:
        raise TypeError("this effect or guard applies to step transitions only")
    return ctx.step


# -- effects ------------------------------------------------------------------------------
def persist(ctx: TransitionContext) -> Deferred:
    """Mark the event for saving (the save itself is the engine's commit point)."""
    ctx.txn.persist = True
    return None


def heartbeat(ctx: TransitionContext) -> Deferred:
    ctx.workflow.heartbeat_at = ctx.now
    return None


def emit(ctx: TransitionContext) -> Deferred:
    """Publish the transition on the `statesaga.events` logger once the save succeeded."""
    if ctx.entry is not None:
        ctx.txn.emitted.append(ctx.entry)
    return None


def start_attempt(ctx: TransitionContext) -> Deferred:
    step = _step(ctx)
    step.attempts += 1
    step.started_at = ctx.now
    step.next_attempt_at = None
    if step.first_started_at is None:
        step.first_started_at = ctx.now
    return None


def workflow(ctx: TransitionContext, value: str) -> Deferred:
    """`{workflow: TRIGGER}` on a step transition: fire TRIGGER on the workflow next."""
    ctx.then(value)
    return None


def enqueue_step(ctx: TransitionContext) -> Deferred:
    """Put the step's next attempt on the queue; after a failure, after the backoff delay.

    The due time is persisted (next_attempt_at), so a lost job is found and re-enqueued by
    recovery with the time it has left: retry waits are durable timers.
    """
    step, wf, engine = _step(ctx), ctx.workflow, ctx.engine
    now = ctx.now
    if step.status is StepStatus.RETRYING:
        requeued = ctx.entry is not None and ctx.entry.trigger == "requeue"
        if not requeued or step.next_attempt_at is None:
            step.next_attempt_at = now + timedelta(seconds=step.retry.delay(step.attempts))
        delay = max((step.next_attempt_at - now).total_seconds(), 0.0)
    else:
        step.next_attempt_at = None
        delay = 0.0
    job = engine.step_job(wf, step)
    return lambda: engine.queue.enqueue(job, delay)


def enqueue_compensation(ctx: TransitionContext) -> Deferred:
    step, wf, engine = _step(ctx), ctx.workflow, ctx.engine
    comp = step.compensation
    if comp is None:
        return None
    delay = comp.retry.delay(comp.attempts) if comp.attempts and comp.error is not None else 0.0
    if ctx.entry is not None and ctx.entry.trigger == "requeue":
        delay = 0.0
    job = engine.compensation_job(wf, step)
    return lambda: engine.queue.enqueue(job, delay)


def schedule_ready(ctx: TransitionContext) -> Deferred:
    """Schedule every PENDING step whose dependencies have all completed."""
    wf = ctx.workflow
    done = {s.name for s in wf.steps if s.status is StepStatus.COMPLETED}
    for step in wf.steps:
        if step.status is StepStatus.PENDING and all(d in done for d in step.depends_on):
            ctx.fire_step(step, "schedule")
    return None


def compensate(ctx: TransitionContext) -> Deferred:
    """Unwind by the workflow's strategy: skip what has not started, then undo completed steps
    in reverse completion order (backward) or all at once (parallel)."""
    wf = ctx.workflow
    for step in wf.steps:
        if step.status in _NOT_STARTED:
            ctx.fire_step(step, "skip", "the saga is unwinding")
    completed = sorted(
        (s for s in wf.steps if s.status is StepStatus.COMPLETED),
        key=lambda s: (s.completed_at is not None, s.completed_at),
        reverse=True,
    )
    undoing = any(s.status is StepStatus.COMPENSATING for s in wf.steps)
    if wf.strategy is CompensationStrategy.PARALLEL:
        for step in completed:
            ctx.fire_step(step, "compensate")
    elif completed and not undoing:
        # One at a time: a step with nothing to undo completes at once and asks for the next.
        ctx.fire_step(completed[0], "compensate")
    if not completed and not any(s.status in _BUSY for s in wf.steps):
        ctx.then("compensated")
    return None


def resume_in_flight(ctx: TransitionContext) -> Deferred:
    """Re-enqueue what was in flight: a running attempt whose worker was lost times out (so a
    zombie finishing it later is rejected); queued jobs and compensations are put back."""
    for step in ctx.workflow.steps:
        if step.status is StepStatus.EXECUTING:
            ctx.fire_step(step, "time_out", "worker lost (heartbeat stale); resumed")
        elif step.status in (StepStatus.QUEUED, StepStatus.RETRYING, StepStatus.COMPENSATING):
            ctx.fire_step(step, "requeue", "resumed")
    return None


# -- guards -------------------------------------------------------------------------------
def all_steps_completed(ctx: TransitionContext) -> bool:
    return all(s.status is StepStatus.COMPLETED for s in ctx.workflow.steps)


def steps_in_flight(ctx: TransitionContext) -> bool:
    return any(s.status is StepStatus.EXECUTING for s in ctx.workflow.steps)


def all_compensated(ctx: TransitionContext) -> bool:
    """Nothing left to undo and nothing running that could still need undoing."""
    return not any(
        s.status in _BUSY or s.status is StepStatus.COMPLETED or s.status in _NOT_STARTED
        for s in ctx.workflow.steps
    )


def cannot_compensate(ctx: TransitionContext) -> bool:
    """Past a completed pivot, or under forward_retry, failures are not compensated."""
    wf = ctx.workflow
    if wf.strategy is CompensationStrategy.FORWARD_RETRY:
        return True
    return any(s.pivot and s.status is StepStatus.COMPLETED for s in wf.steps)


def can_retry(ctx: TransitionContext) -> bool:
    step, wf = _step(ctx), ctx.workflow
    if wf.status is not WorkflowStatus.RUNNING:
        return False
    if step.attempts >= step.retry.max_attempts:
        return False
    if step.error is not None and step.error.type in step.retry.non_retryable:
        return False
    deadline = step.retry.deadline
    if deadline is not None and step.first_started_at is not None:
        next_start = ctx.now + timedelta(seconds=step.retry.delay(step.attempts))
        if next_start >= step.first_started_at + timedelta(seconds=deadline):
            return False
    return True


def saga_unwinding(ctx: TransitionContext) -> bool:
    return ctx.workflow.status in (WorkflowStatus.COMPENSATING, WorkflowStatus.CANCELLING)


def has_compensation(ctx: TransitionContext) -> bool:
    return _step(ctx).compensation is not None


def can_retry_compensation(ctx: TransitionContext) -> bool:
    comp = _step(ctx).compensation
    if comp is None or comp.attempts >= comp.retry.max_attempts:
        return False
    return not (comp.error is not None and comp.error.type in comp.retry.non_retryable)


def workflow_running(ctx: TransitionContext) -> bool:
    return ctx.workflow.status is WorkflowStatus.RUNNING


EFFECTS: dict[str, Callable[..., Deferred]] = {
    f.__name__: f
    for f in (
        persist,
        heartbeat,
        emit,
        start_attempt,
        workflow,
        enqueue_step,
        enqueue_compensation,
        schedule_ready,
        compensate,
        resume_in_flight,
    )
}
GUARDS: dict[str, Callable[..., bool]] = {
    f.__name__: f
    for f in (
        all_steps_completed,
        steps_in_flight,
        all_compensated,
        cannot_compensate,
        can_retry,
        saga_unwinding,
        has_compensation,
        can_retry_compensation,
        workflow_running,
    )
}


def install_builtins(registry: Registry) -> None:
    """Add the built-in effects and guards a registry lacks (a plugin's may replace them)."""
    for name, func in EFFECTS.items():
        if not registry.has_effect(name):
            registry.register_effect(name, func)
    for name, guard in GUARDS.items():
        if not registry.has_guard(name):
            registry.register_guard(name, guard)


__all__ = ["EFFECTS", "GUARDS", "install_builtins"]
