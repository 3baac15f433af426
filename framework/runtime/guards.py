"""The built-in guards the shipped lifecycle tables name: predicates on the working copy.

A guard reads the workflow (and the step, for a step transition) and the time; it changes
nothing. Which states count as started, busy or undoable is the vocabulary's (read from the
tables), not listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from ..models import CompensationStrategy, SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..vocabulary import (
    STEP_APPLYING,
    STEP_MAY_REMAIN,
    STEP_NOT_STARTED,
    STEP_TO_UNDO,
    WORKFLOW_UNWINDING,
)

if TYPE_CHECKING:
    from .transaction import TransitionContext

#: A step in one of these may still have (or get) an effect, so what it depends on waits.
HOLDS_DEPENDENCIES = STEP_TO_UNDO | STEP_APPLYING


def step_of(ctx: TransitionContext) -> SagaStep:
    """The step of a step transition (an effect or guard named on a workflow one is a table
    error)."""
    if ctx.step is None:
        raise TypeError("this effect or guard applies to step transitions only")
    return ctx.step


def all_steps_completed(ctx: TransitionContext) -> bool:
    return all(s.status is StepStatus.COMPLETED for s in ctx.workflow.steps)


def steps_in_flight(ctx: TransitionContext) -> bool:
    return any(s.status is StepStatus.EXECUTING for s in ctx.workflow.steps)


def all_compensated(ctx: TransitionContext) -> bool:
    """Nothing left to undo and nothing running that could still need undoing."""
    return not any(
        s.status in HOLDS_DEPENDENCIES or s.status in STEP_NOT_STARTED for s in ctx.workflow.steps
    )


def may_have_applied(step: SagaStep) -> bool:
    """The step's effect may be in force: it completed, is running, or its outcome is
    unknown."""
    return step.status in STEP_MAY_REMAIN or (
        step.in_doubt and step.status in (StepStatus.QUEUED, StepStatus.RETRYING)
    )


def has_effect(step: SagaStep) -> bool:
    """The step's handler may change something outside: an action not declared read_only
    (waits and sleeps run no handler)."""
    return step.kind == "action" and not step.read_only


def past_the_pivot(wf: WorkflowState) -> set[str]:
    """The pivot and every step that depends on it: past the point of no return."""
    past = {s.name for s in wf.steps if s.pivot}
    for s in wf.steps:  # table order lists dependencies first
        if any(d in past for d in s.depends_on):
            past.add(s.name)
    return past


def doubt_is_harmless(wf: WorkflowState, step: SagaStep) -> bool:
    """A lost attempt of this step costs at most a retry: if the saga unwinds, its
    compensation undoes it by its key (or it declares nothing to undo). Not so at or past the
    pivot, where nothing is undone and a step in doubt halts the saga once its retries run
    out, nor under forward_retry (nothing is ever undone); a read_only step has no effect to
    be in doubt about. For the others the engine saves the claim right before the handler's
    call, so a claimed attempt is never taken for a started one (Jobs.claim_eagerly)."""
    if not has_effect(step):
        return True
    if wf.strategy is CompensationStrategy.FORWARD_RETRY:
        return False
    return step.name not in past_the_pivot(wf)


def pivot_passed(ctx: TransitionContext) -> bool:
    """The pivot may have applied (it completed, is running, or an attempt of it was lost):
    from here the saga only goes forward or halts."""
    return any(s.pivot and may_have_applied(s) for s in ctx.workflow.steps)


def cannot_compensate(ctx: TransitionContext) -> bool:
    """Once the pivot may have applied, or under forward_retry (unless an operator cancelled),
    failures are not compensated."""
    wf = ctx.workflow
    if wf.strategy is CompensationStrategy.FORWARD_RETRY and wf.status is WorkflowStatus.RUNNING:
        return True
    return pivot_passed(ctx)


def in_doubt(ctx: TransitionContext) -> bool:
    """An attempt of the step may have applied without its outcome being saved."""
    return step_of(ctx).in_doubt


def can_retry(ctx: TransitionContext) -> bool:
    step, wf = step_of(ctx), ctx.workflow
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
    """The workflow is on its way back (a state the table tags `unwinding`)."""
    return ctx.workflow.status in WORKFLOW_UNWINDING


def has_compensation(ctx: TransitionContext) -> bool:
    return step_of(ctx).compensation is not None


def can_retry_compensation(ctx: TransitionContext) -> bool:
    comp = step_of(ctx).compensation
    if comp is None or comp.attempts >= comp.retry.max_attempts:
        return False
    return not (comp.error is not None and comp.error.type in comp.retry.non_retryable)


def workflow_running(ctx: TransitionContext) -> bool:
    return ctx.workflow.status is WorkflowStatus.RUNNING


def is_waiting_kind(ctx: TransitionContext) -> bool:
    """A wait or sleep step: it waits in WAITING instead of running a handler."""
    return step_of(ctx).kind in ("wait", "sleep")


def signal_received(ctx: TransitionContext) -> bool:
    step = step_of(ctx)
    return bool(step.signal and ctx.workflow.signals.get(step.signal))


def timeout_continues(ctx: TransitionContext) -> bool:
    return step_of(ctx).on_timeout == "continue"


GUARDS: dict[str, Callable[..., bool]] = {
    f.__name__: f
    for f in (
        all_steps_completed,
        steps_in_flight,
        all_compensated,
        cannot_compensate,
        pivot_passed,
        in_doubt,
        can_retry,
        saga_unwinding,
        has_compensation,
        can_retry_compensation,
        workflow_running,
        is_waiting_kind,
        signal_received,
        timeout_continues,
    )
}


__all__ = [
    "GUARDS",
    "HOLDS_DEPENDENCIES",
    "doubt_is_harmless",
    "has_effect",
    "may_have_applied",
    "past_the_pivot",
    "step_of",
]
