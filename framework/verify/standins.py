"""Ledger stand-ins: a simulated external service and the handlers that call it in place of a
user's own, so the deterministic simulation (statesaga.verify.simulation) can run any saga and see
every side effect.

The service honours idempotency keys as a payment or booking API does: an `apply` whose key is
already in force answers with the first reference and does nothing; an `undo` by key removes
what is in force and leaves a tombstone, so a late `apply` of the same key (a zombie worker
finishing after the saga unwound) is refused instead of applied. Every undo is checked against
the saga's dependency graph and pivot as it happens, so an order violation is caught at the
event that caused it, not only at the end.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..context import StepContext
from ..definitions.load import WorkflowDefinition
from ..errors import StoreFullError
from ..models import WorkflowState, WorkflowStatus
from ..ports import Store
from ..registry import Registry
from ..runtime.handlers import HandlerTimeout


class SimCrash(BaseException):  # noqa: N818 - a worker vanishing is not an error to catch
    """Raised inside a simulated worker to make it vanish at a boundary: no settle, no enqueue.

    A BaseException, so the engine's `except Exception` around a handler does not swallow it,
    exactly as nothing in a process survives its SIGKILL.
    """


class StandInError(Exception):
    """Raised by a stand-in handler whose attempt fails (the service refused or was down)."""


class Refused(StandInError):
    """Raised when the service refuses an apply whose key was already undone (a zombie)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One call that reached the service. `fresh` is False for a repeat that did nothing."""

    op: str  # "apply" | "undo"
    step: str
    key: str
    ref: str | None
    fresh: bool


@dataclass
class Service:
    """The simulated external service, and the invariants checked at each of its calls.

    `dependents[s]` lists every step that depends on s (transitively); `after_pivot` holds
    the pivot and the steps that depend on it; `undoable` the steps with a compensation.
    `reached` holds the (step, attempt) pairs whose handler may have been called: those that
    passed their claim, the last write before the call (the simulation's probe notes them).
    """

    dependents: Mapping[str, frozenset[str]]
    after_pivot: frozenset[str]
    pivot: str | None
    undoable: frozenset[str]
    entries: list[LedgerEntry] = field(default_factory=list)
    live: dict[str, str] = field(default_factory=dict)
    undone: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    reached: set[tuple[str, int]] = field(default_factory=set)
    _refs: int = 0

    @classmethod
    def for_definition(cls, definition: WorkflowDefinition) -> Service:
        deps = definition.dependencies
        below: dict[str, set[str]] = {name: set() for name in deps}
        for name in deps:  # table order lists dependencies first
            stack = list(deps[name])
            while stack:
                d = stack.pop()
                if name not in below[d]:
                    below[d].add(name)
                    stack.extend(deps[d])
        pivot = definition.pivot
        after = frozenset({pivot} | below[pivot]) if pivot else frozenset()
        undoable = frozenset(s.name for s in definition.steps if s.compensation is not None)
        return cls({k: frozenset(v) for k, v in below.items()}, after, pivot, undoable)

    def apply(self, key: str, step: str) -> str:
        if key in self.live:
            self.entries.append(LedgerEntry("apply", step, key, self.live[key], False))
            return self.live[key]
        if key in self.undone:
            self.entries.append(LedgerEntry("apply", step, key, None, False))
            raise Refused(f"{step}: refused, its key was already undone")
        self._refs += 1
        ref = f"{step}-{self._refs}"
        self.live[key] = ref
        self.entries.append(LedgerEntry("apply", step, key, ref, True))
        return ref

    def undo(self, key: str, step: str, workflow_id: str) -> str | None:
        """Undo what is in force under `key` (nothing if nothing is) and refuse it later."""
        ref = self.live.pop(key, None)
        self.undone.add(key)
        self.entries.append(LedgerEntry("undo", step, key, ref, ref is not None))
        if step in self.after_pivot:
            self.violations.append(f"{step} is at or after the pivot but was undone")
        if self.pivot is not None and self.ever_applied(f"{workflow_id}:{self.pivot}"):
            self.violations.append(
                f"{step} was undone after the pivot {self.pivot} applied "
                "(past the pivot a saga only goes forward)"
            )
        for later in sorted(self.dependents.get(step, ())):
            if later in self.undoable and f"{workflow_id}:{later}" in self.live:
                self.violations.append(
                    f"{step} was undone while {later}, which depends on it, was still applied "
                    "(compensations must run in reverse dependency order)"
                )
        return ref

    def ever_applied(self, key: str) -> bool:
        return any(e.op == "apply" and e.fresh and e.key == key for e in self.entries)

    def fresh_applies(self, key: str) -> int:
        return sum(1 for e in self.entries if e.op == "apply" and e.fresh and e.key == key)


#: What a stand-in does on one call, decided by the simulation's seeded scheduler.
ActionFault = str  # "ok" | "fail" | "timeout" (after applying) | "crash" (after applying)


@dataclass
class Faults:
    """The scheduler's choices for handler calls: `action(step, attempt)` and `undo(step)`
    return a fault name; `progress(step)` the sub-state triggers to try while running."""

    action: Callable[[str, int], ActionFault]
    undo: Callable[[str], ActionFault]
    progress: Callable[[str], list[str]] = lambda step: []


def register_standins(
    registry: Registry, definition: WorkflowDefinition, service: Service, faults: Faults
) -> None:
    """Register a stand-in under every action and compensation name the definition uses (in
    place of any handler registered under that name)."""
    for spec in definition.steps:
        if spec.action is not None:
            registry.register_handler(spec.action, _action(service, faults), replace=True)
        if spec.compensation is not None:
            registry.register_handler(
                spec.compensation.action, _undo(service, faults), replace=True
            )


def _action(service: Service, faults: Faults) -> Callable[[StepContext], Any]:
    def stand_in(ctx: StepContext) -> dict[str, Any]:
        fault = faults.action(ctx.step, ctx.attempt)
        if fault == "fail":
            raise StandInError(f"{ctx.step} attempt {ctx.attempt} failed (simulated)")
        for trigger in faults.progress(ctx.step):
            try:
                ctx.progress(trigger)
            except Exception:  # noqa: BLE001 - an illegal sub-state move is refused, not fatal
                pass
        ref = service.apply(ctx.idempotency_key, ctx.step)
        if fault == "timeout":
            raise HandlerTimeout()
        if fault == "crash":
            raise SimCrash(f"worker died in {ctx.step} after its effect")
        return {"ref": ref}

    return stand_in


def _undo(service: Service, faults: Faults) -> Callable[[StepContext], Any]:
    def stand_in(ctx: StepContext) -> dict[str, Any]:
        fault = faults.undo(ctx.step)
        if fault == "fail":
            raise StandInError(f"undo of {ctx.step} failed (simulated)")
        key = ctx.idempotency_key.removesuffix(":undo")
        ref = service.undo(key, ctx.step, ctx.workflow_id)
        if fault == "crash":
            raise SimCrash(f"worker died undoing {ctx.step} after its effect")
        return {"undone": ref}

    return stand_in


class RefusingStore(Store):
    """A store whose disk fills for a while: while `refusing`, every write (create, save,
    heartbeat) raises StoreFullError and writes nothing, as the SQLite store does on a full
    disk; reads answer as ever."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.refusing = False

    def _refuse(self) -> None:
        if self.refusing:
            raise StoreFullError("simulated store: the disk is full; nothing was written")

    def initialize(self) -> None:
        self.inner.initialize()

    def exists(self) -> bool:
        return self.inner.exists()

    def read_only(self) -> None:
        self.inner.read_only()

    def server_time(self) -> datetime | None:
        return self.inner.server_time()

    def create(self, wf: WorkflowState) -> None:
        self._refuse()
        self.inner.create(wf)

    def get(self, workflow_id: str) -> WorkflowState:
        return self.inner.get(workflow_id)

    def save(self, wf: WorkflowState) -> None:
        self._refuse()
        self.inner.save(wf)

    def heartbeat(self, workflow_id: str, at: datetime) -> None:
        self._refuse()
        self.inner.heartbeat(workflow_id, at)

    def list(
        self,
        *,
        session_id: str | None = None,
        status: WorkflowStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[WorkflowState]:
        return self.inner.list(session_id=session_id, status=status, limit=limit)

    def list_stale(
        self, before: datetime, statuses: Iterable[WorkflowStatus]
    ) -> builtins.list[WorkflowState]:
        return self.inner.list_stale(before, statuses)

    def close(self) -> None:
        self.inner.close()


def pick(rng: random.Random, weights: Mapping[str, float]) -> str:
    """One name drawn by weight (names in the mapping's order, so a seed replays exactly)."""
    names = list(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


__all__ = [
    "Faults",
    "LedgerEntry",
    "Refused",
    "RefusingStore",
    "Service",
    "SimCrash",
    "StandInError",
    "pick",
    "register_standins",
]
