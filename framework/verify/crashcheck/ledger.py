"""The side-effect ledger of the crash matrix: an append-only file standing for an external
service that honours idempotency keys, written by handlers in every process of a run, and
the check that nothing in it was applied twice, undone without being applied, or left applied
by a workflow that says it undid everything.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ...context import StepContext
from ...models import StepStatus, WorkflowState, WorkflowStatus
from ...runtime.guards import past_the_pivot

#: Where handlers write their side-effect ledger (a JSON-lines file).
LEDGER_ENV = "STATESAGA_LEDGER"
#: `step` (default) or `attempt`: what the ledger's simulated service deduplicates on.
LEDGER_SCOPE_ENV = "STATESAGA_LEDGER_SCOPE"


@dataclass(frozen=True)
class LedgerRecord:
    """One handler call that reached the outside world.

    `fresh` is False when the (simulated) service recognised a repeat of an operation it had
    already performed and did nothing, the way an API with idempotency keys answers a retry.
    """

    op: Literal["apply", "undo"]
    workflow_id: str
    step: str
    key: str
    ref: str
    fresh: bool
    pid: int


class Ledger:
    """An append-only file of side effects, shared by every process of a run.

    It stands for an external service that honours idempotency keys: an `apply` whose
    operation is already applied (and not undone) is a no-op returning the first reference,
    an `undo` of something already undone is a no-op. The service is keyed by
    `StepContext.idempotency_key` (scope `step`, the default), which is the same for every
    attempt of a step. Scope `attempt` keys it by `StepContext.attempt_key` instead, which
    changes when recovery re-runs a lost attempt (the new attempt token is what rejects
    zombies), and shows why that key cannot deduplicate a lost attempt's effect.

    Records are whole lines written under an exclusive lock, so a SIGKILL leaves either the
    record or nothing.
    """

    def __init__(self, path: str | Path, scope: str = "step") -> None:
        if scope not in ("step", "attempt"):
            raise ValueError(f"ledger scope must be 'step' or 'attempt', not {scope!r}")
        self.path = Path(path)
        self.scope = scope

    @classmethod
    def from_env(cls) -> Ledger | None:
        path = os.environ.get(LEDGER_ENV)
        if not path:
            return None
        return cls(path, os.environ.get(LEDGER_SCOPE_ENV, "step"))

    def _operation(self, ctx: StepContext) -> str:
        return ctx.idempotency_key if self.scope == "step" else ctx.attempt_key

    def apply(self, ctx: StepContext, ref: str) -> str:
        """Record the action of `ctx`; returns the reference in force (the first one when the
        service recognises a repeat)."""
        op = self._operation(ctx)
        with self._locked() as (records, write):
            live = _live_applies(records, self.scope)
            if op in live:
                write(
                    LedgerRecord(
                        "apply", ctx.workflow_id, ctx.step, op, live[op], False, os.getpid()
                    )
                )
                return live[op]
            write(LedgerRecord("apply", ctx.workflow_id, ctx.step, op, ref, True, os.getpid()))
            return ref

    def undo(self, ctx: StepContext, ref: str) -> bool:
        """Record the undo of the effect `ref`; False when it was not in force (a repeat)."""
        with self._locked() as (records, write):
            applied = {r.ref for r in records if r.op == "apply" and r.fresh}
            undone = {r.ref for r in records if r.op == "undo" and r.fresh}
            fresh = ref in applied and ref not in undone
            write(
                LedgerRecord(
                    "undo", ctx.workflow_id, ctx.step, self._operation(ctx), ref, fresh, os.getpid()
                )
            )
            return fresh

    def applied_ref(self, workflow_id: str, step: str) -> str | None:
        """The reference of the step's effect still in force, if any: how a compensation finds
        what to undo when the action's outcome was never saved (its worker died)."""
        records = self.records()
        undone = {r.ref for r in records if r.op == "undo" and r.fresh}
        live = [
            r.ref
            for r in records
            if r.op == "apply"
            and r.fresh
            and r.workflow_id == workflow_id
            and r.step == step
            and r.ref not in undone
        ]
        return live[-1] if live else None

    def records(self) -> list[LedgerRecord]:
        if not self.path.exists():
            return []
        return _parse(self.path.read_text())

    class _Lock:
        def __init__(self, ledger: Ledger) -> None:
            self.ledger = ledger

        def __enter__(self) -> tuple[list[LedgerRecord], Callable[[LedgerRecord], None]]:
            self.file = open(self.ledger.path, "a+", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self.file, fcntl.LOCK_EX)
            self.file.seek(0)
            records = _parse(self.file.read())

            def write(record: LedgerRecord) -> None:
                self.file.write(json.dumps(asdict(record)) + "\n")
                self.file.flush()

            return records, write

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()

    def _locked(self) -> Ledger._Lock:
        return Ledger._Lock(self)


def _parse(text: str) -> list[LedgerRecord]:
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(LedgerRecord(**json.loads(line)))
    return out


def _live_applies(records: Iterable[LedgerRecord], scope: str) -> dict[str, str]:
    """operation -> reference of every fresh apply not undone yet."""
    live: dict[str, str] = {}
    for r in records:
        if not r.fresh:
            continue
        if r.op == "apply":
            live[r.key] = r.ref
        else:
            for k, v in list(live.items()):
                if v == r.ref:
                    del live[k]
    return live


def check_ledger(records: Sequence[LedgerRecord], workflows: Iterable[WorkflowState]) -> list[str]:
    """Problems in the side effects of finished workflows (empty when all is well)."""
    problems: list[str] = []
    for wf in workflows:
        # A step without a compensation declares nothing to undo (a read, a notification),
        # unless it is at or after the pivot: those must not have applied at all.
        names = {s.name for s in wf.steps}
        must_undo = {s.name for s in wf.steps if s.compensation is not None} | past_the_pivot(wf)
        mine = [r for r in records if r.workflow_id == wf.id]
        for step in {r.step for r in mine}:
            rs = [r for r in mine if r.step == step]
            applied = [r.ref for r in rs if r.op == "apply" and r.fresh]
            undone = [r.ref for r in rs if r.op == "undo" and r.fresh]
            stray = [r.ref for r in rs if r.op == "undo" and r.ref not in applied]
            net = len(applied) - len(undone)
            if len(applied) > 1:
                problems.append(f"{step}: applied {len(applied)} times ({', '.join(applied)})")
            if stray:
                problems.append(f"{step}: undo of something never applied ({', '.join(stray)})")
            undoable = step not in names or step in must_undo
            if wf.status is WorkflowStatus.COMPENSATED and net != 0 and undoable:
                problems.append(f"{step}: still applied on a COMPENSATED workflow")
            if wf.status is WorkflowStatus.COMPLETED and net != 1:
                problems.append(f"{step}: applied {net} times net on a COMPLETED workflow")
            stored = wf.step(step)
            if (
                stored.status is StepStatus.COMPLETED
                and wf.status is WorkflowStatus.COMPLETED
                and applied
                and isinstance(stored.result, Mapping)
                and stored.result.get("booking", applied[-1]) != applied[-1]
            ):
                problems.append(
                    f"{step}: stored result names {stored.result.get('booking')},"
                    f" the service applied {applied[-1]}"
                )
    return problems


__all__ = ["LEDGER_ENV", "LEDGER_SCOPE_ENV", "Ledger", "LedgerRecord", "check_ledger"]
