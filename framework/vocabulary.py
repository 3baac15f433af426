"""The engine's vocabulary: the triggers its code fires and the groups of states it reads.

The lifecycle tables say what moves an instance; the engine's code still has to name some of
their words (it fires `dispatch` when a worker claims a step, it asks whether a workflow has
ended). Those words live here, once: trigger names as constants, and every group of states read
from the shipped tables (their final states, their tags, the sources of a trigger, the states it
leads to) rather than listed again in Python. A lifecycle an engine runs (a user's copy or
extension of a shipped one) is checked against this vocabulary when it is loaded, so it cannot
drift from what the engine assumes: a trigger the engine fires or a tag it reads that the
chart lacks fails the load with one line naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .charts.chart import Chart
from .charts.lifecycles import lifecycle
from .charts.spec import SEP
from .errors import DefinitionError, Problem
from .models import StepStatus, WorkflowStatus


class WorkflowTrigger:
    """Workflow triggers the engine's code fires (the tables' `{workflow: ...}` effects fire
    others, which the tables themselves name)."""

    START = "start"
    ADVANCE = "advance"
    STEP_FAILED = "step_failed"
    COMPENSATED = "compensated"
    SIGNAL = "signal"
    RESTART = "restart"
    CANCEL = "cancel"
    FORCE_CANCEL = "force_cancel"
    SUSPEND = "suspend"
    RESUME = "resume"


class StepTrigger:
    """Step triggers the engine's code (and its built-in effects) fires."""

    SCHEDULE = "schedule"
    DISPATCH = "dispatch"
    SUCCEED = "succeed"
    FAIL = "fail"
    TIME_OUT = "time_out"
    REQUEUE = "requeue"
    SKIP = "skip"
    COMPENSATE = "compensate"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    SIGNAL = "signal"
    WAKE = "wake"
    WAIT_TIMEOUT = "wait_timeout"


#: A workflow state that is not final but ends the run all the same (FAILED: only an
#: operator's restart moves it on).
HALTED = "halted"
#: Work is under way: a workflow whose progress depends on a live worker (recovery watches
#: its heartbeat); a step whose action job is queued or running.
IN_FLIGHT = "in_flight"
#: A workflow parked for an operator (resume or cancel); recovery always picks it up.
PAUSED = "paused"
#: A workflow on its way back: cancelling (nothing new starts) or compensating.
UNWINDING = "unwinding"
#: A step whose compensation job is queued or running.
UNDOING = "undoing"
#: A step that gave up going forward (the workflow is told `step_failed`).
GAVE_UP = "gave_up"
#: Ended undone, nothing of it left applied: a workflow compensated or cancelled before it
#: started; a step compensated.
ROLLED_BACK = "rolled_back"

#: The tags the engine reads, per lifecycle, with what it reads them for.
TAGS: dict[str, dict[str, str]] = {
    "workflow": {
        HALTED: "which workflows have ended without being final",
        IN_FLIGHT: "which workflows recovery watches by their heartbeat",
        PAUSED: "which workflows recovery always picks up",
        UNWINDING: "which workflows are on their way back (the guard saga_unwinding)",
        ROLLED_BACK: "which workflows ended with nothing of theirs left applied",
    },
    "step": {
        IN_FLIGHT: "which steps have their action job queued or running",
        UNDOING: "which steps have their compensation job queued or running",
        GAVE_UP: "which steps gave up going forward",
        ROLLED_BACK: "which steps were undone",
    },
}


def _names(holder: type) -> frozenset[str]:
    return frozenset(v for k, v in vars(holder).items() if k.isupper() and isinstance(v, str))


#: The triggers the engine's code fires, per lifecycle.
TRIGGERS: dict[str, frozenset[str]] = {
    "workflow": _names(WorkflowTrigger),
    "step": _names(StepTrigger),
}


def tagged(chart: Chart, tag: str) -> frozenset[str]:
    """The top-level states of a chart that carry `tag`."""
    return frozenset(name for name, st in chart.top_states.items() if tag in st.tags)


def sources(chart: Chart, *triggers: str) -> frozenset[str]:
    """The top-level states from which one of `triggers` may fire (guards aside)."""
    return frozenset(
        name for name in chart.top_states for t in triggers if chart.transitions_from(name, t)
    )


def reachable(chart: Chart, states: Iterable[str]) -> frozenset[str]:
    """`states` and every top-level state a chain of transitions leads to from them."""
    seen: set[str] = set()
    todo = list(states)
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        todo.extend(_top(t.dest) for t in chart.transitions_from(state))
    return frozenset(seen)


def destinations(chart: Chart, *triggers: str) -> frozenset[str]:
    """The top-level states one of `triggers` may lead to (guards aside)."""
    return frozenset(_top(t.dest) for t in chart.transitions if t.trigger in triggers)


def _top(path: str) -> str:
    return path.split(SEP, 1)[0]


def ended(chart: Chart) -> frozenset[str]:
    """Where a workflow has ended: the final states, and those tagged `halted`."""
    return frozenset(s for s in chart.top_states if chart.is_final(s)) | tagged(chart, HALTED)


def check(chart: Chart, name: str) -> None:
    """Raise DefinitionError, one line per word, if `chart` (a `name` lifecycle the engine is
    to run) lacks a trigger the engine fires or tags other states than the shipped one with a
    tag the engine reads."""
    shipped = lifecycle(name)
    problems = [
        f"the {name} lifecycle {chart.name!r} lacks the trigger {t!r}, which the engine fires"
        for t in sorted(TRIGGERS[name] - set(chart.triggers))
    ]
    for tag, why in TAGS[name].items():
        want, have = tagged(shipped, tag), tagged(chart, tag)
        if have != want:
            problems.append(
                f"the {name} lifecycle {chart.name!r} must tag {_listed(want)} (and no other "
                f"state) {tag!r}, as the shipped one does: the engine reads it to tell {why}"
                + (f"; it tags {_listed(have)}" if have else "")
            )
    if problems:
        raise DefinitionError(Problem(p, chart.file) for p in problems)


def _listed(states: Iterable[str]) -> str:
    return ", ".join(sorted(states)) or "no state"


_WORKFLOW = lifecycle("workflow")
_STEP = lifecycle("step")
check(_WORKFLOW, "workflow")  # a constant above that the shipped tables lack fails here
check(_STEP, "step")


def _workflow(states: Iterable[str]) -> frozenset[WorkflowStatus]:
    return frozenset(WorkflowStatus(s) for s in states)


def _step(states: Iterable[str]) -> frozenset[StepStatus]:
    return frozenset(StepStatus(s) for s in states)


#: Final or halted: nothing moves the workflow on by itself.
WORKFLOW_ENDED = _workflow(ended(_WORKFLOW))
#: Not ended: created, running, unwinding or suspended.
WORKFLOW_OPEN = frozenset(WorkflowStatus) - WORKFLOW_ENDED
#: Progress depends on a live worker (RUNNING, CANCELLING, COMPENSATING).
WORKFLOW_IN_FLIGHT = _workflow(tagged(_WORKFLOW, IN_FLIGHT))
#: Parked for an operator (SUSPENDED).
WORKFLOW_PAUSED = _workflow(tagged(_WORKFLOW, PAUSED))
#: Started and not finished: what a lost worker or agent session can pick up again.
WORKFLOW_RECOVERABLE = WORKFLOW_IN_FLIGHT | WORKFLOW_PAUSED
#: Ended with nothing left applied (COMPENSATED, CANCELLED).
WORKFLOW_ROLLED_BACK = _workflow(tagged(_WORKFLOW, ROLLED_BACK))
#: On its way back (CANCELLING, COMPENSATING).
WORKFLOW_UNWINDING = _workflow(tagged(_WORKFLOW, UNWINDING))

#: The step's action job is queued or running (QUEUED, EXECUTING, RETRYING).
STEP_IN_FLIGHT = _step(tagged(_STEP, IN_FLIGHT))
#: The step's compensation job is queued or running (COMPENSATING).
STEP_UNDOING = _step(tagged(_STEP, UNDOING))
#: A job for the step (its action or its compensation) is queued or running.
STEP_BUSY = STEP_IN_FLIGHT | STEP_UNDOING
#: The step's effect was undone (COMPENSATED).
STEP_ROLLED_BACK = _step(tagged(_STEP, ROLLED_BACK))
#: The step gave up going forward (FAILED, IN_DOUBT).
STEP_GAVE_UP = _step(tagged(_STEP, GAVE_UP))
#: No work of the step is under way, so an unwinding saga skips it (the sources of `skip`).
STEP_NOT_STARTED = _step(sources(_STEP, StepTrigger.SKIP))
#: What an unwinding saga undoes (the sources of `compensate`): a completed step, or one whose
#: last attempt may have applied.
STEP_TO_UNDO = _step(sources(_STEP, StepTrigger.COMPENSATE))
#: Work under way that may already apply: busy and past the point of being skipped
#: (EXECUTING, COMPENSATING).
STEP_APPLYING = STEP_BUSY - STEP_NOT_STARTED
#: Its action may have applied and is not undone: what an unwinding saga undoes, or an
#: action running now (COMPLETED, IN_DOUBT, EXECUTING).
STEP_MAY_REMAIN = STEP_TO_UNDO | (STEP_IN_FLIGHT - STEP_NOT_STARTED)
#: Nothing more to do on the way forward: neither yet to start nor with its action in flight
#: (COMPLETED, the steps that gave up or were skipped, and every state of the way back).
STEP_SETTLED = frozenset(StepStatus) - STEP_NOT_STARTED - STEP_IN_FLIGHT
#: Waits for its signal or its time (the sources of `signal`, `wake` and `wait_timeout`).
STEP_WAITING = _step(sources(_STEP, StepTrigger.SIGNAL, StepTrigger.WAKE, StepTrigger.WAIT_TIMEOUT))
#: A wait step that can still take a signal: one waiting (the sources of `signal`), or one not
#: scheduled yet (the sources of `schedule`), which takes a kept signal once it waits.
STEP_SIGNALLABLE = _step(sources(_STEP, StepTrigger.SIGNAL, StepTrigger.SCHEDULE))
#: Where the saga is at: a job of the step is queued or running, or it waits (QUEUED,
#: WAITING, EXECUTING, RETRYING, COMPENSATING).
STEP_CURRENT = STEP_BUSY | STEP_WAITING
#: On the way back: what `compensate` leads to and what follows from there (COMPENSATING,
#: COMPENSATED, COMPENSATION_FAILED).
STEP_UNWOUND = _step(reachable(_STEP, destinations(_STEP, StepTrigger.COMPENSATE)))
#: What recovery puts back on the queue (the sources of `requeue`): a queued or retrying
#: attempt, a compensation, a wait's timer.
STEP_REQUEUEABLE = _step(sources(_STEP, StepTrigger.REQUEUE))

__all__ = [
    "GAVE_UP",
    "HALTED",
    "IN_FLIGHT",
    "PAUSED",
    "ROLLED_BACK",
    "STEP_APPLYING",
    "STEP_BUSY",
    "STEP_CURRENT",
    "STEP_GAVE_UP",
    "STEP_IN_FLIGHT",
    "STEP_MAY_REMAIN",
    "STEP_NOT_STARTED",
    "STEP_REQUEUEABLE",
    "STEP_ROLLED_BACK",
    "STEP_SETTLED",
    "STEP_SIGNALLABLE",
    "STEP_TO_UNDO",
    "STEP_UNDOING",
    "STEP_UNWOUND",
    "STEP_WAITING",
    "TAGS",
    "TRIGGERS",
    "UNDOING",
    "UNWINDING",
    "WORKFLOW_ENDED",
    "WORKFLOW_IN_FLIGHT",
    "WORKFLOW_OPEN",
    "WORKFLOW_PAUSED",
    "WORKFLOW_RECOVERABLE",
    "WORKFLOW_ROLLED_BACK",
    "WORKFLOW_UNWINDING",
    "StepTrigger",
    "WorkflowTrigger",
    "check",
    "destinations",
    "ended",
    "reachable",
    "sources",
    "tagged",
]
