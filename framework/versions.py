"""Definition versions: can the running instances of a workflow continue under a new version?

An instance carries its own copy of the step specs it started with (and records `version`), so
registering a new version never changes a running instance. Before a deploy that will move
instances to the new version, `check_upgrade` says, for every instance of the same workflow
that has not ended and started on another version, whether it could continue: its current
step(s) must still exist, and each step it has completed must still be undone the same way
(same compensation action and params), or its compensation would do something else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .definitions.load import WorkflowDefinition
from .definitions.spec import StepSpec
from .models import SagaStep, StepStatus, WorkflowState, WorkflowStatus
from .ports import Store
from .vocabulary import STEP_CURRENT, STEP_TO_UNDO, STEP_UNDOING, WORKFLOW_OPEN

#: The workflow states of an instance still in flight: those that have not ended (FAILED
#: waits for an operator's restart on the version it has; a restart keeps its own step specs).
IN_FLIGHT = tuple(s for s in WorkflowStatus if s in WORKFLOW_OPEN)
#: Steps whose effect took place (or may have: in doubt) and may still be undone under the new
#: version: what `compensate` starts from, and what is being undone (from the step table).
_UNDOABLE = STEP_TO_UNDO | STEP_UNDOING


@dataclass(frozen=True)
class UpgradeCheck:
    """One instance: can it continue under the new version, and if not, why not."""

    workflow_id: str
    version: str
    status: str
    current: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "workflow_id": self.workflow_id,
            "version": self.version,
            "status": self.status,
            "current": list(self.current),
            "ok": self.ok,
            "problems": list(self.problems),
        }


def check_instance(wf: WorkflowState, new: WorkflowDefinition) -> UpgradeCheck:
    specs = {s.name: s for s in new.steps}
    current = [s for s in wf.steps if s.status in STEP_CURRENT]
    if not current and wf.status is WorkflowStatus.PENDING:
        current = [s for s in wf.steps if not s.depends_on]
    problems: list[str] = []
    for s in current:
        if s.name not in specs:
            problems.append(f"its current step {s.name!r} is not in version {new.version}")
    for s in wf.steps:
        if s.status not in _UNDOABLE:
            continue
        # An attempt whose outcome is unknown is undone like a completed one (issue 15).
        kind = "in-doubt step" if s.status is StepStatus.IN_DOUBT else "completed step"
        if s.name in specs:
            why = _undo_differs(s, specs[s.name])
            if why:
                problems.append(f"{kind} {s.name!r}: {why}")
        elif s.compensation is not None:
            problems.append(
                f"{kind} {s.name!r} is not in version {new.version}, so its "
                f"compensation {s.compensation.action_type!r} would be lost"
            )
    return UpgradeCheck(
        wf.id, wf.version, wf.status.value, tuple(s.name for s in current), tuple(problems)
    )


def _undo_differs(step: SagaStep, spec: StepSpec) -> str | None:
    old = step.compensation
    new = spec.compensation
    if old is None and new is None:
        return None
    if old is None:
        assert new is not None
        return f"the new version adds a compensation {new.action!r} it never had"
    if new is None:
        return f"the compensation {old.action_type!r} was removed"
    if old.action_type != new.action:
        return f"compensation {old.action_type!r} became {new.action!r}"
    if dict(old.params) != dict(new.params):
        return f"the params of compensation {old.action_type!r} changed"
    return None


def in_flight(store: Store, name: str) -> Iterable[WorkflowState]:
    for status in IN_FLIGHT:
        for wf in store.list(status=status):
            if wf.name == name:
                yield wf


def check_upgrade(store: Store, new: WorkflowDefinition) -> list[UpgradeCheck]:
    """Every in-flight instance of `new`'s workflow that runs another version, checked."""
    found = [wf for wf in in_flight(store, new.name) if wf.version != new.version]
    found.sort(key=lambda wf: (wf.created_at, wf.id))
    return [check_instance(wf, new) for wf in found]


__all__ = ["IN_FLIGHT", "UpgradeCheck", "check_instance", "check_upgrade"]
