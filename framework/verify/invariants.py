"""The invariants of DESIGN.md ("what reliable means here"), checked by the simulation after
every event and at the end, against the stored workflow and the stand-in service's ledger.

Each check returns a list of problems (empty when all is well), one line each, naming the step.
"""

from __future__ import annotations

from ..models import StepStatus, WorkflowState, WorkflowStatus
from ..vocabulary import WORKFLOW_ENDED, WORKFLOW_ROLLED_BACK
from .standins import Service

#: Where a workflow has ended for good; FAILED is halted (only an operator's restart moves it).
ENDED = WORKFLOW_ENDED


def check_event(wf: WorkflowState, service: Service, ended_as: WorkflowStatus | None) -> list[str]:
    """After every event: the service saw no bad undo, an ended workflow stays ended, and a
    workflow that says it rolled back has nothing left applied."""
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
    return problems


def check_end(wf: WorkflowState, service: Service) -> list[str]:
    """Once every process has run: the workflow has ended, and a halted one says why."""
    problems = check_event(wf, service, None)
    if wf.status not in ENDED:
        problems.append(f"did not converge: still {wf.status.value} ({_steps(wf)})")
    if wf.status is WorkflowStatus.FAILED and not (wf.reason or wf.error):
        problems.append("halted FAILED without a reason an operator can act on")
    return problems


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


def _steps(wf: WorkflowState) -> str:
    return " ".join(f"{s.name}:{s.status.value}" for s in wf.steps)


__all__ = ["ENDED", "check_end", "check_event"]
