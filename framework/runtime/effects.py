"""The built-in effects the shipped lifecycle tables name.

An effect changes only the working copy and returns what must happen outside as a callable,
run after the save (the jobs it asks for are enqueued then too). The guards are in
statesaga.runtime.guards; both are installed into an engine's registry by `install_builtins`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..models import (
    CompensationStrategy,
    SagaStep,
    StepError,
    StepStatus,
    new_id,
)
from ..vocabulary import (
    STEP_GAVE_UP,
    STEP_NOT_STARTED,
    STEP_REQUEUEABLE,
    STEP_TO_UNDO,
    STEP_WAITING,
    StepTrigger,
    WorkflowTrigger,
)
from .guards import GUARDS, HOLDS_DEPENDENCIES, has_effect, may_have_applied
from .guards import step_of as _step
from .jobs import compensation_job, step_job, timer_job

if TYPE_CHECKING:
    from ..registry import Registry
    from .transaction import TransitionContext

Deferred = Callable[[], None] | None


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
    step, wf = _step(ctx), ctx.workflow
    now = ctx.now
    if step.status is StepStatus.RETRYING:
        # A due time already persisted stands (a requeue keeps the time left); a failed
        # attempt has none (its dispatch cleared it), so its backoff starts now.
        if step.next_attempt_at is None:
            step.next_attempt_at = now + timedelta(seconds=step.retry.delay(step.attempts))
        delay = max((step.next_attempt_at - now).total_seconds(), 0.0)
    else:
        step.next_attempt_at = None
        delay = 0.0
    ctx.txn.jobs.append((step_job(wf, step), delay))
    return None


def enqueue_compensation(ctx: TransitionContext, at_once: bool = False) -> Deferred:
    """Put the step's compensation on the queue; after a failed attempt, after its backoff
    delay. `at_once`: no delay (the table asks for it where the backoff, never persisted,
    was already spent, e.g. recovery putting back a lost compensation)."""
    step, wf = _step(ctx), ctx.workflow
    comp = step.compensation
    if comp is None:
        return None
    delay = 0.0
    if comp.attempts and comp.error is not None and not at_once:
        delay = comp.retry.delay(comp.attempts)
    ctx.txn.jobs.append((compensation_job(wf, step), delay))
    return None


def schedule_ready(ctx: TransitionContext) -> Deferred:
    """Schedule every PENDING step whose dependencies have all completed."""
    wf = ctx.workflow
    done = {s.name for s in wf.steps if s.status is StepStatus.COMPLETED}
    for step in wf.steps:
        if step.status is StepStatus.PENDING and all(d in done for d in step.depends_on):
            ctx.fire_step(step, StepTrigger.SCHEDULE)
    return None


def compensate(ctx: TransitionContext) -> Deferred:
    """Unwind by the workflow's strategy: skip what has not started, then undo what may have
    applied (completed steps, and those whose outcome is unknown) in reverse dependency order:
    a step is undone only once no step depending on it may still hold an effect (completed,
    in doubt, running or being undone). Among the steps that are ready, backward undoes the
    latest to complete, one at a time; parallel undoes them all at once."""
    wf = ctx.workflow
    for step in wf.steps:
        if step.status in STEP_NOT_STARTED:
            ctx.fire_step(step, StepTrigger.SKIP, "the saga is unwinding")
    held = {d for s in wf.steps if s.status in HOLDS_DEPENDENCIES for d in s.depends_on}
    order = {s.name: i for i, s in enumerate(wf.steps)}
    ready = sorted(
        (s for s in wf.steps if s.status in STEP_TO_UNDO and s.name not in held),
        key=lambda s: (s.completed_at or s.started_at or ctx.now, order[s.name]),
        reverse=True,
    )
    undoing = any(s.status is StepStatus.COMPENSATING for s in wf.steps)
    if wf.strategy is CompensationStrategy.PARALLEL:
        for step in ready:
            ctx.fire_step(step, StepTrigger.COMPENSATE)
    elif ready and not undoing:
        # One at a time: a step with nothing to undo completes at once and asks for the next.
        ctx.fire_step(ready[0], StepTrigger.COMPENSATE)
    if not any(s.status in HOLDS_DEPENDENCIES for s in wf.steps):
        ctx.then(WorkflowTrigger.COMPENSATED)
    return None


def catch_up(ctx: TransitionContext) -> Deferred:
    """Resuming: take the news a suspended workflow could not (a step that completed or gave
    up meanwhile fired `advance` or `step_failed`, which SUSPENDED ignores)."""
    wf = ctx.workflow
    if any(s.status in STEP_GAVE_UP for s in wf.steps):
        ctx.then(WorkflowTrigger.STEP_FAILED)
    elif all(s.status is StepStatus.COMPLETED for s in wf.steps):
        ctx.then(WorkflowTrigger.ADVANCE)
    return None


def outcome_unknown(ctx: TransitionContext) -> Deferred:
    """The attempt ended without a saved outcome: it may have applied. The step's error says
    so (unless the attempt's own timeout already did), not the previous attempt's error."""
    step = _step(ctx)
    step.in_doubt = True
    if step.error is None or step.error.attempt != step.attempts:
        step.error = StepError(
            type="WorkerLost",
            message=f"{step.name}: the worker running attempt {step.attempts} was lost before "
            "its outcome was saved; its effect may have applied",
            attempt=step.attempts,
        )
    return None


def explain_halt(ctx: TransitionContext, cancelled: bool = False) -> Deferred:
    """FAILED halts for an operator: say why, and name the effects that may remain.
    `cancelled`: the halt came from a cancel, not a failed step (the table says so on the
    transitions a cancel takes, so the words follow the table, not the trigger's name)."""
    wf = ctx.workflow
    if wf.reason:
        return None
    pivot = next((s for s in wf.steps if s.pivot and may_have_applied(s)), None)
    if pivot is not None:
        state = {StepStatus.COMPLETED: "it applied", StepStatus.EXECUTING: "it is running"}.get(
            pivot.status, "its outcome is unknown"
        )
        # Only steps whose effect can remain: not waits, sleeps or read-only steps.
        left = [s.name for s in wf.steps if may_have_applied(s) and has_effect(s)]
        why = "cancelled" if cancelled else "a step failed"
        wf.reason = (
            f"{why} once the pivot {pivot.name} may have applied ({state}), so nothing is "
            f"undone; effects that may remain: {', '.join(left)}. Check them, then restart "
            "from the step to run again"
        )
    else:
        failed = next((s for s in wf.steps if s.status in STEP_GAVE_UP), None)
        wf.reason = (
            f"{failed.name if failed else 'a step'} failed under the forward_retry strategy; "
            "nothing is undone. Fix it, then restart from that step"
        )
    return None


def resume_in_flight(ctx: TransitionContext) -> Deferred:
    """Re-enqueue what was in flight: a running attempt whose worker was lost times out (so a
    zombie finishing it later is rejected); queued jobs, compensations and the timers of
    waiting steps (with the time they have left) are put back."""
    for step in ctx.workflow.steps:
        if step.status is StepStatus.EXECUTING:
            ctx.fire_step(step, StepTrigger.TIME_OUT, "worker lost (heartbeat stale); resumed")
        elif step.status in STEP_WAITING and step.next_attempt_at is None:
            continue  # a wait without a timeout has no timer to put back
        elif step.status in STEP_REQUEUEABLE:
            ctx.fire_step(step, StepTrigger.REQUEUE, "resumed")
    return None


# -- waits, sleeps and signals --------------------------------------------------------------
def start_wait(ctx: TransitionContext) -> Deferred:
    """Enter WAITING: persist the timer's due time (a wait's timeout, a sleep's end) and
    count the wait as an attempt, so each wait's timer carries its own attempt token."""
    step = _step(ctx)
    step.attempts += 1
    step.started_at = ctx.now
    if step.first_started_at is None:
        step.first_started_at = ctx.now
    step.next_attempt_at = _due(step, ctx.now)
    return None


def _due(step: SagaStep, now: datetime) -> datetime | None:
    if step.kind == "sleep":
        if step.until is not None:
            return step.until
        return now + timedelta(seconds=step.sleep or 0.0)
    if step.timeout is not None:
        return now + timedelta(seconds=step.timeout)
    return None


def take_early_signal(ctx: TransitionContext) -> Deferred:
    """A signal that arrived before the step waited was kept in the inbox: take it now."""
    step = _step(ctx)
    if step.kind == "wait" and step.signal and ctx.workflow.signals.get(step.signal):
        ctx.fire_step(step, StepTrigger.SIGNAL, f"{step.signal} (received before the step waited)")
    return None


def enqueue_timer(ctx: TransitionContext) -> Deferred:
    """Put the step's timer on the queue for the time left until its persisted due time.

    The due time is the durable part: if the queue loses the job (every worker died, a Redis
    restart), recovery's `requeue` enqueues it again with whatever time is left.
    """
    step, wf = _step(ctx), ctx.workflow
    if step.status is not StepStatus.WAITING or step.next_attempt_at is None:
        return None  # a wait without a timeout needs no timer (or the signal was taken)
    delay = max((step.next_attempt_at - ctx.now).total_seconds(), 0.0)
    ctx.txn.jobs.append((timer_job(wf, step), delay))
    return None


def take_signal(ctx: TransitionContext) -> Deferred:
    """The oldest payload of the step's signal becomes its result."""
    step, wf = _step(ctx), ctx.workflow
    assert step.signal is not None  # the signal_received guard checked the inbox
    inbox = wf.signals[step.signal]
    payload = inbox.pop(0)
    if not inbox:
        del wf.signals[step.signal]
    _complete(ctx, step, payload)
    return None


def finish_sleep(ctx: TransitionContext) -> Deferred:
    step = _step(ctx)
    due = step.next_attempt_at
    _complete(ctx, step, {"slept_until": due.isoformat() if due else None})
    return None


def take_default(ctx: TransitionContext) -> Deferred:
    step = _step(ctx)
    _complete(ctx, step, step.default)
    return None


def timeout_error(ctx: TransitionContext) -> Deferred:
    step, wf = _step(ctx), ctx.workflow
    step.next_attempt_at = None
    step.error = StepError(
        type="WaitTimeout",
        message=f"{step.name}: no {step.signal!r} signal within {step.timeout}s",
        attempt=step.attempts,
    )
    if wf.error is None:
        wf.error = step.error
    return None


def _complete(ctx: TransitionContext, step: SagaStep, result: object) -> None:
    step.result = result
    step.error = None
    step.next_attempt_at = None
    step.completed_at = ctx.now
    ctx.workflow.results[step.name] = result


def deliver_signals(ctx: TransitionContext) -> Deferred:
    """Hand kept signals to the wait steps waiting for them (the rest stay in the inbox)."""
    wf = ctx.workflow
    for step in wf.steps:
        if (
            step.status is StepStatus.WAITING
            and step.kind == "wait"
            and step.signal
            and wf.signals.get(step.signal)
        ):
            ctx.fire_step(step, StepTrigger.SIGNAL, step.signal)
    return None


def reset_steps(ctx: TransitionContext) -> Deferred:
    """Restart: the chosen step and every step after it (in table order, or depending on a
    reset one) start afresh from their own specs; results before it are kept."""
    wf = ctx.workflow
    start = ctx.txn.params["from_step"]
    names = [s.name for s in wf.steps]
    reset = set(names[names.index(start) :])
    for step in wf.steps:  # table order lists dependencies first
        if any(d in reset for d in step.depends_on):
            reset.add(step.name)
    wf.steps = [fresh_step(s, ctx.now) if s.name in reset else s for s in wf.steps]
    for name in reset:
        wf.results.pop(name, None)
    wf.error = None
    wf.reason = None
    wf.finished_at = None
    return None


def fresh_step(step: SagaStep, now: datetime) -> SagaStep:
    """The same step as a new one: same action, params, retry and compensation (a new id)."""
    comp = step.compensation
    if comp is not None:
        comp = comp.model_copy(
            update={
                "id": new_id("COMP", now),
                "attempts": 0,
                "error": None,
                "result": None,
                "started_at": None,
                "finished_at": None,
            }
        )
    keep = {
        "id", "name", "action_type", "params", "depends_on", "retry", "timeout", "pivot",
        "read_only", "todo_id", "kind", "signal", "on_timeout", "default", "sleep", "until",
        "payload",
    }  # fmt: skip
    spec = step.model_dump(include=keep)
    return SagaStep.model_validate({**spec, "compensation": comp})


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
        outcome_unknown,
        explain_halt,
        catch_up,
        start_wait,
        take_early_signal,
        enqueue_timer,
        take_signal,
        finish_sleep,
        take_default,
        timeout_error,
        deliver_signals,
        reset_steps,
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


__all__ = ["EFFECTS", "GUARDS", "fresh_step", "install_builtins"]
