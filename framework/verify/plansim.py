"""The deterministic simulation of agents' plans (statesaga.plans): the faults of
statesaga.verify.simulation (crashes at every job boundary, lost, duplicated and stale jobs,
recovery scans, cancels, clock jumps), and the events an agent and a person add: revisions at
random points (also in the middle of a worker's job, racing it), approvals (correct, for
changed args, late, duplicated), rejections.

Each seed draws a plan of 8 items (a read-only item, three reversible ones in parallel, a
reversible note, an irreversible payment that needs approval, an email and an itinerary after
it) over simulated tools whose handlers are ledger stand-ins. Besides the invariants of every
saga, after every event:

- a removed item never runs;
- an item runs only with the args of the plan version it was claimed under;
- an approval is taken at most once, and an approved item runs with the args it was given for;
- no item that needs approval runs without it;
- nothing is undone out of reverse dependency order (the service is told each new plan's
  dependencies as it is revised).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ..context import StepContext
from ..errors import StatesagaError
from ..models import StepStatus, WorkflowState
from ..plans import (
    PlanSpec,
    Tool,
    approve,
    args_hash,
    compile_plan,
    open_requests,
    reject,
    revise_plan,
    start_plan,
)
from ..plans.plan import approval_step, item_of
from ..plans.tools import _TOOL, Reversibility
from ..registry import Registry
from . import events
from .invariants import plan_call_problems
from .simulation import (
    EVENTS,
    OPTIONAL,
    Rig,
    SeedResult,
    Simulation,
    _Violation,
)
from .standins import Service, StandInError

#: The plan events, by weight, on top of the saga's.
PLAN_EVENTS = {"revise": 6.0, "approve": 6.0, "reject": 0.6}
PLAN_OPTIONAL = {"reject": 0.3}


class SimArgs(BaseModel):
    n: int = Field(ge=0, description="what the call is about")


def _tool(name: str, kind: Reversibility, undo: str | None = None, approval: bool = False) -> Tool:
    return Tool(name, f"simulated {name}", SimArgs, kind, undo, approval)


TOOLS = {
    "read": _tool("read", Reversibility.READ_ONLY),
    "book": _tool("book", Reversibility.REVERSIBLE, undo="unbook"),
    "pay": _tool("pay", Reversibility.IRREVERSIBLE, approval=True),
    "send": _tool("send", Reversibility.IRREVERSIBLE),
}


def plan_for(seed: int) -> PlanSpec:
    """The plan of a seed: the shape of the issue's, args drawn from the seed."""
    n = seed % 97
    items = [
        {"id": "search", "tool": "read", "args": {"n": n}},
        *(
            {"id": name, "tool": "book", "args": {"n": n + i}, "depends_on": ["search"]}
            for i, name in enumerate(("flight", "hotel", "car"), 1)
        ),
        {"id": "note", "tool": "book", "args": {"n": n}, "depends_on": ["flight"]},
        {
            "id": "payment",
            "tool": "pay",
            "args": {"n": 100 + n},
            "depends_on": ["flight", "hotel", "car", "note"],
        },
        {"id": "confirm", "tool": "send", "args": {"n": n}, "depends_on": ["payment"]},
        {"id": "itinerary", "tool": "book", "args": {"n": n}, "depends_on": ["payment"]},
    ]
    return PlanSpec.model_validate({"plan": "sim_plan", "approval_timeout": 600, "items": items})


@dataclass
class PlanLedger:
    """What the plan's tools were called with, and the approvals the simulation saw taken."""

    removed: set[str] = field(default_factory=set)
    approvals: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    calls: int = 0


class PlanSimulation(Simulation):
    """One seeded run of one plan (see the module docstring)."""

    def __init__(self, seed: int, *, rig: Rig | None = None, **kw: Any) -> None:
        self.spec = plan_for(seed)
        compiled = compile_plan(self.spec, TOOLS)
        super().__init__(compiled.definition, seed, rig=rig or PlanRig(), **kw)
        for kind, weight in PLAN_EVENTS.items():
            if self.rng.random() < PLAN_OPTIONAL.get(kind, 1.0):
                self.kinds[kind] = weight
        self.plan = PlanLedger()
        self.revisions = 0
        self.stale_hashes: list[str] = []
        _register_tools(self.engine.registry, self)

    def _actions(self) -> dict[str, Callable[[], None]]:
        return {
            **super()._actions(),
            "revise": self._do_revise,
            "approve": self._do_approve,
            "reject": self._do_reject,
            "signal": self._do_signal,  # a plan's signal is mostly an approval
        }

    # -- the start, and the plan's events ----------------------------------------------------
    def _start(self) -> WorkflowState:
        wf, _ = start_plan(self.engine, self.spec, by="agent")
        self._refresh_service(wf)
        return wf

    def _do_revise(self) -> None:
        wf = self._wf()
        if wf.plan is None:
            return
        current = wf.plan.current
        items = {i["id"]: i for i in current.spec["items"]}
        # Mostly items that have not started; sometimes any item (the engine must refuse).
        pending = {s.name for s in wf.steps if s.status is StepStatus.PENDING}
        open_ = [i for i in items if i in pending]
        if not open_ or self.rng.random() < 0.25:
            open_ = sorted(items)
        needed = {d for i in items.values() for d in i.get("depends_on") or ()}
        patch: dict[str, Any] = {}
        r = self.rng.random()
        if open_ and r < 0.45:
            item = dict(items[self.rng.choice(open_)])
            item["args"] = {"n": self.rng.randint(0, 500)}
            patch["replace"] = [item]
        elif r < 0.7 and [i for i in open_ if i not in needed]:
            patch["remove"] = [self.rng.choice(sorted(i for i in open_ if i not in needed))]
        else:
            self.revisions += 1
            after = self.rng.choice(sorted(items))
            patch["add"] = [
                {"id": f"extra{self.revisions}", "tool": "book",
                 "args": {"n": self.rng.randint(0, 500)}, "depends_on": [after]}
            ]  # fmt: skip
        if self.rng.random() < 0.15:
            patch["base_version"] = max(current.number - 1, 0)  # stale: refused
        try:
            for request in open_requests(wf):
                self.stale_hashes.append(request.hash)
            new = revise_plan(self.engine, self.wf_id, patch, by="agent")
        except StatesagaError as exc:
            self._note(f"revise {_brief(patch)}", f"refused: {str(exc)[:80]}")
            return
        self.plan.removed.update(patch.get("remove", ()))
        assert new.plan is not None
        self._refresh_service(new)
        self._note(f"revise {_brief(patch)}", f"plan v{new.plan.current.number}")

    def _do_approve(self, healing: bool = False) -> None:
        wf = self._wf()
        gated = [s.name.rsplit(".", 1)[0] for s in wf.steps if s.name.endswith(".approval")]
        if not gated:
            self._note("approve", "nothing to approve")
            return
        item = self.rng.choice(gated) if not healing else gated[0]
        gate = wf.step(approval_step(item))
        right = gate.params.get("hash", "")
        r = 1.0 if healing else self.rng.random()
        hash_ = right if r > 0.3 or not self.stale_hashes else self.rng.choice(self.stale_hashes)
        try:
            approve(self.engine, self.wf_id, item, hash_, by="person")
        except StatesagaError as exc:
            self._note(f"approve {item}", f"refused: {str(exc)[:70]}")
            return
        self.plan.approvals[item] += 1
        if hash_ != right:
            self.plan.violations.append(f"{item}: an approval for other args was taken")
        self._note(f"approve {item}", "taken")

    def _do_reject(self) -> None:
        for request in open_requests(self._wf()):
            try:
                reject(self.engine, self.wf_id, request.item, by="person", reason="simulated")
            except StatesagaError as exc:
                self._note(f"reject {request.item}", f"refused: {exc}")
                return
            self._note(f"reject {request.item}", "accepted")
            return
        self._note("reject", "no request open")

    def _do_signal(self) -> None:
        # A person answers the open requests (in the fault phase, at random points).
        if open_requests(self._wf()):
            self._do_approve(healing=self.healing)
        else:
            events.signal(self)

    # -- invariants --------------------------------------------------------------------------
    def _refresh_service(self, wf: WorkflowState) -> None:
        """Tell the service the dependencies of the plan as revised (for the order check)."""
        assert wf.plan is not None
        spec = PlanSpec.model_validate(wf.plan.current.spec)
        fresh = Service.for_definition(compile_plan(spec, TOOLS).definition)
        # The stand-ins hold this very service: its graph is updated, its ledger kept.
        self.service.dependents = fresh.dependents
        self.service.after_pivot = self.service.after_pivot | fresh.after_pivot
        self.service.undoable = self.service.undoable | fresh.undoable

    def _check(self) -> None:
        super()._check()
        if self.plan.violations:
            raise _Violation("\n".join(self.plan.violations))
        wf = self._last
        if wf is None:
            return
        for item, n in self.plan.approvals.items():
            if n > 1:
                raise _Violation(f"{item}: approved {n} times (an approval is taken once)")

    def called(self, ctx: StepContext, tool: Tool) -> None:
        """Every tool call, checked against the stored plan as the worker saw it claimed."""
        self.plan.calls += 1
        wf = self.engine.store.get(ctx.workflow_id)
        step = item_of(ctx.step)
        assert wf.plan is not None
        args = {i["id"]: i.get("args", {}) for i in wf.plan.current.spec["items"]}
        gate = given = None
        if tool.approval:
            try:
                approval = wf.step(approval_step(step))
            except KeyError:
                self.plan.violations.append(f"{step}: needs approval but has no approval step")
                return
            gate = approval.status
            given = approval.result.get("hash") if isinstance(approval.result, dict) else None
        self.plan.violations += plan_call_problems(
            step, dict(ctx.params), args.get(step), self.plan.removed, gate, given,
            args_hash(tool.name, ctx.params),
        )  # fmt: skip


class PlanRig(Rig):
    """A rig whose engine keeps the plan's params (the simulation's stand-ins of sagas take
    none; a plan's tools are checked against theirs)."""

    def __init__(self) -> None:
        self.definition = compile_plan(plan_for(0), TOOLS).definition
        self._build(Registry())


def _register_tools(registry: Registry, sim: PlanSimulation) -> None:
    """The simulated tools: the saga stand-ins (faults, the service's ledger), checked by the
    plan's invariants at each call, and marked as tools so plans may name them."""
    for name, spec in TOOLS.items():
        base = registry.get_handler(name).func if registry.has_handler(name) else None

        def run(ctx: StepContext, spec: Tool = spec, base: Callable[..., Any] | None = base) -> Any:
            sim.called(ctx, spec)
            if base is None:
                raise StandInError(f"no stand-in for {spec.name}")
            return base(ctx)

        setattr(run, _TOOL, spec)
        registry.register_handler(name, run, replace=True)
    if not registry.has_handler("unbook"):
        raise StandInError("the stand-in of unbook is missing")


def _brief(patch: dict[str, Any]) -> str:
    parts = [f"{k} {', '.join(i['id'] if isinstance(i, dict) else i for i in v)}"
             for k, v in patch.items() if k != "base_version"]  # fmt: skip
    if "base_version" in patch:
        parts.append(f"(base v{patch['base_version']})")
    return "; ".join(parts)


def simulate_plan(seed: int, **kw: Any) -> SeedResult:
    return PlanSimulation(seed, **kw).run()


@dataclass
class PlanSummary:
    ran: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failed: list[SeedResult] = field(default_factory=list)
    revisions: int = 0
    approvals: int = 0
    calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        ends = ", ".join(f"{n} {status}" for status, n in sorted(self.outcomes.items()))
        verdict = "every invariant held" if self.ok else f"{len(self.failed)} failed"
        return (
            f"{self.ran} plans: {verdict} ({ends}); {self.revisions} revisions and "
            f"{self.approvals} approvals taken, {self.calls} tool calls"
        )


def run_plan_seeds(seeds: Iterable[int], *, stop_at_first: bool = True) -> PlanSummary:
    summary = PlanSummary()
    rig = PlanRig()
    for seed in seeds:
        sim = PlanSimulation(seed, rig=rig)
        result = sim.run()
        summary.ran += 1
        summary.outcomes[result.status] += 1
        summary.approvals += sum(sim.plan.approvals.values())
        summary.calls += sim.plan.calls
        summary.revisions += sum(1 for t in result.trace if " revise " in t and "plan v" in t)
        if not result.ok:
            summary.failed.append(result)
            if stop_at_first:
                break
    return summary


__all__ = [
    "EVENTS",
    "OPTIONAL",
    "PlanSimulation",
    "PlanSummary",
    "plan_for",
    "run_plan_seeds",
    "simulate_plan",
]
