"""The crash matrix of an agent's plan (statesaga.plans): the plan is started instead of a
saga, revised once mid-flight, and its approval answered, in every cell, with the worker
process SIGKILLed at each boundary in turn (the revision's save and the approval's save are
boundaries too).

In the crash process (`PlanDriver`):

- every tool and every undo a tool names is wrapped by a recorder, which appends one line per
  call to `plan.jsonl` in the cell's directory: the item, its idempotency key, the args it was
  called with, the plan version in the store at the call and that version's args for the
  item, and for an item that needs approval, its approval step's status and approved hash;
- the patch (`PlanRun.patch`) is applied once, at the first pause between jobs after the item
  `PlanRun.revise_after` has completed (default: when the plan first waits for a person);
  a recovery process applies it if the killed one had not saved it;
- each open approval request is answered: first with the hash of the item's args as the
  first plan version had them (when a revision changed them: it must be refused), then with
  the request's hash (approve, or `reject` when `PlanRun.reject`), then a duplicate (refused).
  An answer the engine should have refused and took is written to `plan.jsonl` as a problem.

In the matrix (`check_plan`), besides the checks of every saga: a removed item never ran;
every call had the args of the plan version it ran under; an item that needs approval ran only
once approved, for those very args; an approval was taken at most once; each item kept one
idempotency key across its calls; nothing was undone before an item depending on it was.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...context import StepContext
from ...errors import StatesagaError
from ...models import StepStatus, WorkflowState, WorkflowStatus
from ...ports import Job

if TYPE_CHECKING:
    from ...engine import Engine

#: The recorder's file in a cell's directory.
PLAN_RECORD = "plan.jsonl"


@dataclass(frozen=True)
class PlanRun:
    """How a plan scenario is driven: the patch applied mid-flight (a file: add, replace,
    remove, base_version), the item after which it is applied (None: when the plan first
    waits for a person), and whether the approval requests are rejected instead."""

    patch: str | None = None
    revise_after: str | None = None
    reject: bool = False

    def as_spec(self) -> dict[str, Any]:
        return {"patch": self.patch, "revise_after": self.revise_after, "reject": self.reject}


def check_scenario(plan_file: str, run: PlanRun, handlers: Sequence[str]) -> None:
    """Refuse a plan scenario the matrix cannot run, before any process starts: the plan and
    its patch must compile against the tools, `revise_after` must be an item. Raises
    ValueError (one line) or the plan's DefinitionError."""
    from ...app import EngineOptions
    from ...plans import compile_plan, load_patch, load_plan, tools_in

    if not handlers:
        raise ValueError("a plan's crash matrix needs its tools: give --tools MODULE")
    registry = EngineOptions(
        "memory://", "inline://", handlers=list(handlers), allow="listed"
    ).build().registry  # fmt: skip
    tools = tools_in(registry)
    spec, lines = load_plan(plan_file)
    compile_plan(spec, tools, lines)
    ids = [i.id for i in spec.items]
    if run.patch is not None:
        load_patch(run.patch)
    if run.revise_after is not None and run.revise_after not in ids:
        raise ValueError(
            f"--revise-after {run.revise_after!r}: the plan has no such item "
            f"(items: {', '.join(ids)})"
        )


class PlanDriver:
    """The plan's side of one crash-worker process (see the module's docstring)."""

    def __init__(self, engine: Engine, spec: Mapping[str, Any], record: Path) -> None:
        self.engine = engine
        self.run = PlanRun(**spec)
        self.record = record
        self._wrap_tools()

    # -- the recorder ----------------------------------------------------------------------
    def _write(self, line: dict[str, Any]) -> None:
        with open(self.record, "a", encoding="utf-8") as f:
            f.write(json.dumps({**line, "pid": os.getpid()}, sort_keys=True, default=str) + "\n")

    def _wrap_tools(self) -> None:
        from ...plans import tools_in

        registry = self.engine.registry
        tools = tools_in(registry)
        names = set(tools) | {t.undo for t in tools.values() if t.undo}
        for name in sorted(names):
            registry.register_handler(
                name, self._recorded(registry.get_handler(name).func), replace=True
            )

    def _recorded(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def note(ctx: StepContext) -> None:
            self._write(self._facts(ctx))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(ctx: StepContext) -> Any:
                note(ctx)
                return await func(ctx)

            return run_async

        @functools.wraps(func)
        def run(ctx: StepContext) -> Any:
            note(ctx)
            return func(ctx)

        return run

    def _facts(self, ctx: StepContext) -> dict[str, Any]:
        """What the call was, and what the store said of its item when it was made."""
        from ...plans.plan import approval_step
        from ...plans.tools import args_hash

        facts: dict[str, Any] = {
            "op": "undo" if ctx.compensating else "call",
            "workflow": ctx.workflow_id,
            "step": ctx.step,
            "key": ctx.idempotency_key,
            "args": dict(ctx.params),
        }
        if ctx.compensating:
            return facts
        wf = self.engine.store.get(ctx.workflow_id)
        assert wf.plan is not None
        current = wf.plan.current
        item = next((i for i in current.spec["items"] if i["id"] == ctx.step), None)
        facts["version"] = current.number
        facts["plan_args"] = None if item is None else item.get("args", {})
        try:
            gate = wf.step(approval_step(ctx.step))
        except KeyError:
            return facts
        given = gate.result.get("hash") if isinstance(gate.result, dict) else None
        facts["gate"] = gate.status.value
        facts["approved_hash"] = given
        facts["hash"] = args_hash(wf.step(ctx.step).action_type or "", ctx.params)
        return facts

    # -- the revision ----------------------------------------------------------------------
    def revision_due(self, wf: WorkflowState) -> bool:
        """The patch is still to apply, and its moment has come (an item that completed)."""
        if self.run.patch is None or wf.plan is None or wf.plan.current.number > 1:
            return False
        if wf.status is not WorkflowStatus.RUNNING or self.run.revise_after is None:
            return False
        return wf.step(self.run.revise_after).status is StepStatus.COMPLETED

    def revise(self, wf: WorkflowState, probe: Callable[[str, Any], None]) -> bool:
        """Apply the patch (its save is an `after_save` boundary); True when it was applied."""
        from ...plans import revise_plan
        from .process import BoundaryBeforeEnqueue

        assert self.run.patch is not None and wf.plan is not None
        at = Job(kind="step", workflow_id=wf.id, step="revise", attempt=wf.plan.current.number + 1)
        try:
            with BoundaryBeforeEnqueue(self.engine, functools.partial(probe, "after_save", at)):
                revise_plan(self.engine, wf.id, self.run.patch, by="check-crashes")
        except StatesagaError as exc:
            self._write({"op": "problem", "workflow": wf.id, "message": f"revision refused: {exc}"})
            self.run = PlanRun(None, None, self.run.reject)  # the plan goes on without it
            return False
        return True

    # -- the approvals ---------------------------------------------------------------------
    def answer(self, wf: WorkflowState, probe: Callable[[str, Any], None]) -> bool:
        """When the plan waits for a person: apply the patch if it waits for this moment,
        else answer each open request (see the module's docstring). True if anything was
        done."""
        from ...plans import approve, open_requests, reject
        from .process import BoundaryBeforeEnqueue

        if self.run.patch is not None and self.run.revise_after is None:
            if wf.plan is not None and wf.plan.current.number == 1:
                self.revise(wf, probe)
                return True
        requests = open_requests(wf)
        for request in requests:
            old = _first_hash(wf, request.item)
            if old is not None and old != request.hash:
                self._must_refuse(
                    wf, request.item, old, "an approval of the args before the revision"
                )
            at = Job(kind="step", workflow_id=wf.id, step=f"{request.item}.approval", attempt=1)
            with BoundaryBeforeEnqueue(self.engine, functools.partial(probe, "after_save", at)):
                if self.run.reject:
                    reject(self.engine, wf.id, request.item, by="check-crashes", reason="test")
                else:
                    approve(self.engine, wf.id, request.item, request.hash, by="check-crashes")
            self._must_refuse(wf, request.item, request.hash, "a second approval")
        return bool(requests)

    def _must_refuse(self, wf: WorkflowState, item: str, hash_: str, what: str) -> None:
        from ...plans import approve

        try:
            approve(self.engine, wf.id, item, hash_, by="check-crashes-duplicate")
        except StatesagaError:
            return
        self._write({"op": "problem", "workflow": wf.id, "message": f"{item}: {what} was taken"})


def _first_hash(wf: WorkflowState, item: str) -> str | None:
    """The hash an approval of `item` had in the plan's first version (None: not in it)."""
    from ...plans.tools import args_hash

    assert wf.plan is not None
    first = {i["id"]: i for i in wf.plan.versions[0].spec["items"]}
    if item not in first:
        return None
    return args_hash(first[item]["tool"], first[item].get("args", {}))


# -- in the matrix -------------------------------------------------------------------------
def read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def check_plan(records: Sequence[Mapping[str, Any]], wf: WorkflowState, run: PlanRun) -> list[str]:
    """The plan's invariants over one cell's record (see the module's docstring)."""
    from ...plans.plan import PlanSpec, item_dependencies
    from ..invariants import plan_call_problems

    problems = [r["message"] for r in records if r["op"] == "problem"]
    if wf.plan is None:
        return [*problems, f"{wf.id} is not a plan"]
    mine = [r for r in records if r.get("workflow") == wf.id]
    calls = [r for r in mine if r["op"] == "call"]
    removed = {
        c.partition(" ")[2] for v in wf.plan.versions for c in v.changes if c.startswith("removed ")
    }
    if (
        run.patch is not None
        and wf.plan.current.number < 2
        and wf.status is not WorkflowStatus.FAILED
    ):
        problems.append("the plan was never revised")
    for r in calls:
        gate = StepStatus(r["gate"]) if "gate" in r else None
        problems += plan_call_problems(
            r["step"], r["args"], r.get("plan_args"), removed, gate, r.get("approved_hash"),
            r.get("hash"),
        )  # fmt: skip
    keys: dict[str, set[str]] = {}
    for r in calls:
        keys.setdefault(r["step"], set()).add(r["key"])
    problems.extend(
        f"{step}: called with {len(k)} idempotency keys" for step, k in keys.items() if len(k) > 1
    )
    taken = Counter(
        h.step
        for h in wf.history
        if h.step and h.step.endswith(".approval") and h.dest == "COMPLETED"
    )
    problems.extend(f"{step}: approved {n} times" for step, n in taken.items() if n > 1)
    deps = item_dependencies(PlanSpec.model_validate(wf.plan.current.spec).items)
    undone_at: dict[str, int] = {}
    for i, r in enumerate(mine):
        if r["op"] == "undo":
            undone_at.setdefault(r["step"], i)
    for item, i in undone_at.items():
        for later, needs in deps.items():
            if item not in needs:
                continue
            if undone_at.get(later, -1) > i:
                problems.append(f"{item}: undone before {later}, which depends on it")
            elif later not in undone_at and wf.step(later).status is StepStatus.COMPLETED:
                if wf.step(later).compensation is not None:
                    problems.append(f"{item}: undone while {later}, which depends on it, stays")
    return problems


__all__ = ["PLAN_RECORD", "PlanDriver", "PlanRun", "check_plan", "check_scenario", "read_record"]
