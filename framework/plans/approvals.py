"""Approvals bound to the exact action: a person approves one item's tool and canonical
arguments, by their hash, once.

An item that needs approval waits in its approval step (`ITEM.approval`), whose request
(`params`) carries the tool, the arguments and their hash. `approve` is refused unless the
request is open (the step WAITING), the hash is the one of the item's current arguments (a
revision that changed them voids approvals of the old ones) and someone is named; it is sent
as the step's signal, whose `payload:` schema checks the hash again inside the transaction that
stores it, so a revision racing the approval cannot slip between the check and the save. Once
taken, the step is COMPLETED: a second approval is refused and the tool runs as one step with
one idempotency key. `reject` (or the request's timeout) fails the approval step, and the plan
unwinds: every item that ran is undone, in reverse dependency order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StateError
from ..models import SagaStep, StepError, StepStatus, WorkflowState
from ..runtime.transaction import Txn
from ..vocabulary import StepTrigger
from .plan import APPROVE, approval_step, check_by
from .runs import require_plan

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass(frozen=True)
class ApprovalRequest:
    """What a person is asked to approve."""

    workflow_id: str
    item: str
    tool: str
    args: dict[str, Any]
    hash: str
    plan_version: int
    status: str
    due: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "item": self.item,
            "tool": self.tool,
            "args": self.args,
            "hash": self.hash,
            "plan_version": self.plan_version,
            "status": self.status,
            "due": self.due,
        }


def _gate(wf: WorkflowState, item: str) -> SagaStep:
    require_plan(wf)
    try:
        wf.step(item)
    except KeyError:
        names = [s.name for s in wf.steps if s.kind == "action"]
        raise StateError(f"{wf.id} has no item {item!r} (items: {', '.join(names)})") from None
    try:
        return wf.step(approval_step(item))
    except KeyError:
        raise StateError(f"{wf.id}: item {item!r} needs no approval") from None


def request_of(wf: WorkflowState, item: str) -> ApprovalRequest:
    gate = _gate(wf, item)
    p = gate.params
    due = gate.next_attempt_at.isoformat() if gate.next_attempt_at else None
    return ApprovalRequest(
        wf.id, item, p["tool"], dict(p["args"]), p["hash"], p["plan_version"],
        gate.status.value, due,
    )  # fmt: skip


def open_requests(wf: WorkflowState) -> list[ApprovalRequest]:
    """The approvals the plan waits for now."""
    if wf.plan is None:
        return []
    return [
        request_of(wf, s.name.rsplit(".", 1)[0])
        for s in wf.steps
        if s.kind == "wait" and s.signal and s.signal.startswith(APPROVE)
        if s.status is StepStatus.WAITING
    ]


def _refusal(wf: WorkflowState, item: str, gate: SagaStep) -> str | None:
    """Why an approval or a rejection of `item` cannot be taken now, or None."""
    if gate.status is StepStatus.WAITING:
        return None
    if gate.status is StepStatus.COMPLETED:
        who = gate.result.get("by") if isinstance(gate.result, dict) else None
        return (
            f"{wf.id}: item {item!r} was already approved by {who} "
            f"at {gate.completed_at:%Y-%m-%d %H:%M:%S}; an approval is taken once"
            if gate.completed_at
            else f"{wf.id}: item {item!r} was already approved"
        )
    if gate.status is StepStatus.PENDING:
        return (
            f"{wf.id}: item {item!r} has no approval request open yet (it waits for "
            f"{', '.join(gate.depends_on) or 'nothing'} to finish)"
        )
    why = f": {gate.error.message}" if gate.error else ""
    return f"{wf.id}: the approval request of item {item!r} is {gate.status.value}{why}"


def approve(
    engine: Engine, workflow_id: str, item: str, hash: str, *, by: str, note: str | None = None
) -> WorkflowState:
    """Approve an item's exact call (see the module's docstring)."""
    if not by or not by.strip():
        raise StateError("an approval names who gives it (--by NAME)")
    check_by(by, "an approval")
    wf = engine.get(workflow_id)
    gate = _gate(wf, item)
    refused = _refusal(wf, item, gate)
    if refused is not None:
        raise StateError(refused)
    current = gate.params["hash"]
    if hash != current:
        raise StateError(
            f"{workflow_id}: hash {hash[:12]}… does not match the current call of item {item!r} "
            f"(hash {current[:12]}…, plan version {gate.params['plan_version']}): the plan was "
            "revised since; read the request again (`statesaga plan show`) and approve that"
        )
    payload: dict[str, Any] = {"hash": hash, "by": by}
    if note:
        payload["note"] = note
    return engine.signal(workflow_id, APPROVE + item, payload, by=by)


def reject(
    engine: Engine, workflow_id: str, item: str, *, by: str, reason: str = ""
) -> WorkflowState:
    """Refuse an item's call: its approval step fails and the plan unwinds."""
    if not by or not by.strip():
        raise StateError("a rejection names who gives it (--by NAME)")
    check_by(by, "a rejection")
    why = f"rejected by {by}" + (f": {reason}" if reason else "")

    def apply(txn: Txn) -> bool:
        wf = txn.wf
        gate = _gate(wf, item)
        refused = _refusal(wf, item, gate)
        if refused is not None:
            raise StateError(refused)
        # The table's way out of a wait that gets no approval: the same transition as the
        # request's timeout (the plan unwinds), with the rejection as the step's error.
        engine.kernel.fire(txn, gate, StepTrigger.WAIT_TIMEOUT, why)
        gate.error = StepError(
            type="ApprovalRejected", message=f"{item}: {why}", attempt=gate.attempts
        )
        if wf.error is not None and wf.error.type == "WaitTimeout":
            wf.error = gate.error
        return True

    return engine.kernel.command(workflow_id, apply, by)


__all__ = ["ApprovalRequest", "approve", "open_requests", "reject", "request_of"]
