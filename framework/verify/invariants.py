"""The invariants of DESIGN.md ("what reliable means here"): the one judge of a run.

`simulate` checks them against the simulated service after every event and at the end
(`check_event`, `check_end`); `check-crashes` and the chaos tests judge how each workflow ended
with `judge_end`, which knows the ends the saga promises: the end the user expects for the
input (or the clean run's), COMPENSATED when a lost attempt cost a step its last retry, and the
README's halt (FAILED, its reason naming the pivot) once the pivot may have applied.

Each check returns a list of problems (empty when all is well), one line each, naming the step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..models import CompensationStrategy, StepStatus, WorkflowState, WorkflowStatus
from ..runtime.guards import doubt_is_harmless, may_have_applied
from ..vocabulary import (
    STEP_GAVE_UP,
    STEP_ROLLED_BACK,
    STEP_UNDOING,
    WORKFLOW_ENDED,
    WORKFLOW_ROLLED_BACK,
)
from .standins import Service

#: Where a workflow has ended for good; FAILED is halted (only an operator's restart moves it).
ENDED = WORKFLOW_ENDED


@dataclass
class Verdict:
    """How a workflow ended, judged: `problems` (empty when the end is one the saga promises)
    and `note`, why an end other than the expected one is correct."""

    problems: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_call_problems(
    item: str,
    args: Mapping[str, object],
    plan_args: object,
    removed: Collection[str],
    gate: StepStatus | None = None,
    approved_hash: object = None,
    call_hash: str | None = None,
) -> list[str]:
    """One tool call of an agent's plan against the stored plan it ran under: a removed item
    never runs; it runs with its plan version's args; an item that needs approval (`gate`, its
    approval step's status, given) runs only approved, for these very args. `simulate`'s plans
    and `check-crashes --plan` judge every call by it."""
    problems = []
    if item in removed:
        problems.append(f"{item}: removed from the plan, but it ran")
    if plan_args != args:
        problems.append(f"{item}: ran with {dict(args)}, its plan version says {plan_args}")
    if gate is not None:
        if gate is not StepStatus.COMPLETED or approved_hash is None:
            problems.append(f"{item}: ran without its approval ({gate.value})")
        elif approved_hash != call_hash:
            problems.append(f"{item}: ran with args its approval was not for")
    return problems


def judge_end(
    wf: WorkflowState,
    expected: Collection[str] | None = None,
    reached: Collection[tuple[str, int]] | None = None,
) -> Verdict:
    """Judge the end of a run: it ended (FAILED only as the README's halt, with its reason),
    and as `expected` (statuses; None: any end the saga promises), or otherwise for a reason
    the saga gives (`Verdict.note`): a lost attempt that cost a step its last retry (so the
    saga unwound), or a lost attempt of the pivot that may have reached its handler (so a
    failure halts instead of unwinding). `reached`, when known, lists the (step, attempt)
    pairs that passed their claim, the last write before the call: a lost pivot attempt that
    never did was claimed, not started, and is no reason to halt."""
    verdict = Verdict(check_halt(wf))
    if wf.status not in ENDED:
        verdict.problems.append(f"did not converge: still {wf.status.value} ({_steps(wf)})")
        return verdict
    if expected is not None and wf.status.value not in expected:
        verdict.note = lost_attempt_changed_the_end(wf, reached)
        if verdict.note is None:
            verdict.problems.append(
                f"ended {wf.status.value}, expected {' or '.join(sorted(expected))}"
            )
    return verdict


def check_halt(wf: WorkflowState) -> list[str]:
    """A FAILED workflow halted as the README promises: once the pivot may have applied (its
    reason names the pivot), when a compensation failed, or under forward_retry; never where
    the saga could have unwound by itself."""
    if wf.status is not WorkflowStatus.FAILED:
        return []
    if not (wf.reason or wf.error):
        return ["halted FAILED without a reason an operator can act on"]
    pivot = next((s for s in wf.steps if s.pivot), None)
    # The halt is judged as of when it happened: a pivot running then may have failed since.
    if pivot is not None and (may_have_applied(pivot) or _dispatched(wf, pivot.name)):
        if pivot.name in (wf.reason or ""):
            return []
        return [f"halted once the pivot {pivot.name} may have applied, not naming it: {wf.reason}"]
    if any(s.status is StepStatus.COMPENSATION_FAILED for s in wf.steps):
        return []
    if wf.strategy is CompensationStrategy.FORWARD_RETRY:
        return []
    return [
        "halted FAILED though no pivot may have applied and no compensation failed: the saga "
        f"should have unwound ({_steps(wf)})"
    ]


def lost_attempt_changed_the_end(
    wf: WorkflowState, reached: Collection[tuple[str, int]] | None = None
) -> str | None:
    """Why a run with a lost worker may correctly end otherwise than the clean run: a lost
    attempt counts as an attempt (README, "Crashes, recovery and cancel"), so a step whose last
    retry went to it gives up one attempt earlier and the saga unwinds; and a lost attempt of
    the pivot may have applied, so a failure of its retry halts the saga (README, "The pivot").
    Returns the note, or None."""
    for step in wf.steps:
        lost = [
            h.attempt or 0
            for h in wf.history
            if h.step == step.name
            and h.trigger == "time_out"
            and h.detail is not None
            and "worker lost" in h.detail
        ]
        if not lost:
            continue
        if step.pivot and wf.status is WorkflowStatus.FAILED and step.in_doubt:
            if reached is None or any((step.name, n) in reached for n in lost):
                return f"a lost attempt of the pivot {step.name} may have applied: halted"
            continue
        gave_up = step.status in STEP_GAVE_UP or (
            step.in_doubt and step.status in STEP_UNDOING | STEP_ROLLED_BACK
        )
        if gave_up and step.attempts >= step.retry.max_attempts:
            return f"a lost attempt of {step.name} cost a retry"
    return None


def check_event(wf: WorkflowState, service: Service, ended_as: WorkflowStatus | None) -> list[str]:
    """After every event: the service saw no bad undo, an ended workflow stays ended, a
    workflow that says it rolled back has nothing left applied, and no step whose doubt could
    halt the saga is in doubt about an attempt whose handler was never reached."""
    problems = list(service.violations)
    if ended_as is not None and wf.status is not ended_as:
        problems.append(f"the workflow ended {ended_as.value} but moved on to {wf.status.value}")
    if wf.status in WORKFLOW_ROLLED_BACK:
        problems.extend(_left_behind(wf, service))
    if wf.status is WorkflowStatus.COMPLETED:
        problems.extend(_not_applied_once(wf, service))
    for step in wf.steps:
        if service.fresh_applies(f"{wf.id}:{step.name}") > 1:
            problems.append(f"{step.name}: applied more than once")
        if (
            step.in_doubt
            and not doubt_is_harmless(wf, step)
            and not any((step.name, n) in service.reached for n in range(1, step.attempts + 1))
        ):
            problems.append(
                f"{step.name} is in doubt, but no attempt of it reached its handler: "
                "claimed is not started"
            )
    return problems


def check_end(wf: WorkflowState, service: Service) -> list[str]:
    """Once every process has run: the workflow has ended as the saga promises."""
    return check_event(wf, service, None) + judge_end(wf).problems


def _left_behind(wf: WorkflowState, service: Service) -> list[str]:
    problems = []
    for step in wf.steps:
        key = f"{wf.id}:{step.name}"
        if step.name in service.after_pivot and service.ever_applied(key):
            problems.append(
                f"{step.name} (at or after the pivot) applied on a {wf.status.value} workflow"
            )
        elif step.compensation is not None and key in service.live:
            problems.append(
                f"{step.name}: effect {service.live[key]} still applied on a "
                f"{wf.status.value} workflow (step {step.status.value})"
            )
    return problems


def _not_applied_once(wf: WorkflowState, service: Service) -> list[str]:
    problems = []
    for step in wf.steps:
        if step.kind != "action":
            continue
        ref = service.live.get(f"{wf.id}:{step.name}")
        if step.status is not StepStatus.COMPLETED:
            problems.append(f"{step.name} is {step.status.value} on a COMPLETED workflow")
        elif ref is None:
            problems.append(f"{step.name}: COMPLETED but its effect is not in force")
        elif isinstance(step.result, dict) and step.result.get("ref") != ref:
            problems.append(
                f"{step.name}: stored result names {step.result.get('ref')}, in force {ref}"
            )
    return problems


def _dispatched(wf: WorkflowState, step: str) -> bool:
    return any(h.step == step and h.dest.startswith(StepStatus.EXECUTING.value) for h in wf.history)


def _steps(wf: WorkflowState) -> str:
    return " ".join(f"{s.name}:{s.status.value}" for s in wf.steps)


__all__ = [
    "ENDED",
    "Verdict",
    "check_end",
    "check_event",
    "check_halt",
    "judge_end",
    "lost_attempt_changed_the_end",
    "plan_call_problems",
]
