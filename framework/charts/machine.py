"""Compile a Chart to one `transitions` Machine and fire triggers on plain state strings.

Why one shared machine with one cursor model, rather than a Machine (or `add_model`) per
instance: building a Machine costs tens of microseconds and kilobytes per instance, and
`Machine.add_model` slows linearly with the number of attached models. Instances here are
documents loaded from a store; only their state string matters to the machine. So each
compiled chart keeps a single cursor, sets its state, fires, and reads the result back
(figures in the foundation issue note and benchmarks/).

Charts with compound states or parallel regions compile to `transitions`'
HierarchicalMachine (with `.` as the path separator, since our names contain `_`); flat
charts keep the plain Machine, which is several times faster per trigger.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from transitions import Machine
from transitions.extensions.nesting import HierarchicalMachine, NestedState

from ..errors import TransitionError
from .chart import Chart
from .spec import SEP, StateSpec, TransitionSpec

if TYPE_CHECKING:
    from ..registry import Registry

#: A state value: a path, or the active leaves of parallel regions.
State = str | list[str]


class _DottedState(NestedState):
    separator = SEP


class _Hierarchical(HierarchicalMachine):  # type: ignore[misc]
    state_cls = _DottedState


class _Cursor:
    """The single model the shared machine drives."""

    state: State
    taken: int | None = None


class Fired(NamedTuple):
    transition: TransitionSpec
    state: State


def _hsm_state(spec: StateSpec) -> Any:
    if not spec.states:
        return {"name": spec.name, "final": spec.final} if spec.final else spec.name
    children = [_hsm_state(c) for c in spec.states]
    if spec.parallel:
        return {"name": spec.name, "parallel": children}
    return {"name": spec.name, "initial": spec.initial, "children": children}


class CompiledChart:
    """A chart bound to a registry (its guards resolved) and compiled to a `transitions` Machine."""

    def __init__(self, chart: Chart, registry: Registry | None = None) -> None:
        if registry is not None:
            chart.check_bindings(registry)
        self.chart = chart
        self.hierarchical = chart.hierarchical
        options: dict[str, Any] = {
            "model": None,
            "initial": chart.initial,
            "auto_transitions": False,
            "send_event": False,
            "ignore_invalid_triggers": False,
        }
        if self.hierarchical:
            self._machine: Machine = _Hierarchical(
                states=[_hsm_state(s) for s in chart.spec.states], **options
            )
        else:
            self._machine = Machine(states=list(chart.states), **options)
        # Which transition fired is read from the destination when that is unambiguous; only
        # (source, trigger) groups with two candidates to the same destination need a callback.
        # In a hierarchical machine the state reached is a descendant of the destination, so
        # every transition records itself.
        self._candidates: dict[tuple[str, str], list[int]] = {}
        for idx, t in enumerate(chart.transitions):
            for src in t.source:
                self._candidates.setdefault((src, t.trigger), []).append(idx)
        record = {
            i
            for group in self._candidates.values()
            for i in group
            if self.hierarchical
            or sum(chart.transitions[j].dest == chart.transitions[i].dest for j in group) > 1
        }
        self._by_dest: dict[tuple[str, str, str], int] = {}
        for (src, trig), group in self._candidates.items():
            for i in group:
                self._by_dest.setdefault((src, trig, chart.transitions[i].dest), i)
        for idx, t in enumerate(chart.transitions):
            conditions: list[Any] = []
            unless: list[Any] = []
            for raw, name in zip(t.guards, t.guard_names, strict=True):
                if registry is None:
                    raise TransitionError(chart.name, "-", t.trigger, [], "guards need a registry")
                func = registry.get_guard(name)
                (unless if raw.startswith("not ") else conditions).append(func)
            self._machine.add_transition(
                t.trigger,
                list(t.source),
                t.dest,
                conditions=conditions,
                unless=unless,
                after=[partial(self._record, idx)] if idx in record else [],
            )
        self._cursor = _Cursor()
        self._machine.add_model(self._cursor, initial=chart.initial)
        self._events = self._machine.events
        # One cursor is shared by every caller; firing is short, so a lock is cheaper than a
        # cursor (and a model registration) per thread.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.chart.name

    def _record(self, idx: int, *args: Any, **kwargs: Any) -> None:
        self._cursor.taken = idx

    def allowed(self, state: State) -> list[str]:
        return self.chart.allowed_triggers(state)

    def can_fire(self, state: State, trigger: str) -> bool:
        return bool(self.chart.transitions_from(state, trigger))

    def initial_state(self) -> State:
        """The state a new instance is in (the initial leaf, for a compound initial state)."""
        leaves = self.chart.entered(self.chart.initial)
        return leaves[0] if len(leaves) == 1 else leaves

    def fire(self, state: State, trigger: str, ctx: Any = None) -> TransitionSpec:
        """Fire trigger from state; return the transition taken (see `fire_to`)."""
        return self.fire_to(state, trigger, ctx).transition

    def fire_to(self, state: State, trigger: str, ctx: Any = None) -> Fired:
        """Fire trigger from state; return the transition taken and the state reached.

        Raises TransitionError (and changes nothing) when the trigger is not allowed from
        state or every candidate transition's guards reject it.
        """
        if self.hierarchical:
            return self._fire_nested(state, trigger, ctx)
        assert isinstance(state, str)
        group = self._candidates.get((state, trigger))
        if group is None:
            if state not in self.chart.states:
                raise TransitionError(self.name, state, trigger, [], f"unknown state {state!r}")
            raise TransitionError(self.name, state, trigger, self.allowed(state))
        with self._lock:
            cursor = self._cursor
            # A flat Machine keeps the state's name in the model attribute; assigning it is
            # what `Machine.set_state` does, minus its lookups (a third of our overhead).
            cursor.state = state
            cursor.taken = None
            fired = self._events[trigger].trigger(cursor, ctx)
            taken = cursor.taken
            dest = cursor.state
        if not fired:
            raise TransitionError(
                self.name, state, trigger, self.allowed(state), "every guard rejected it"
            )
        if taken is None:
            assert isinstance(dest, str)
            taken = self._by_dest[(state, trigger, dest)]
        return Fired(self.chart.transitions[taken], dest)

    def _fire_nested(self, state: State, trigger: str, ctx: Any) -> Fired:
        leaves = [state] if isinstance(state, str) else list(state)
        unknown = [leaf for leaf in leaves if leaf not in self.chart.states]
        label = ",".join(leaves)
        if unknown:
            raise TransitionError(self.name, label, trigger, [], f"unknown state {unknown[0]!r}")
        if not self.chart.transitions_from(leaves, trigger):
            raise TransitionError(self.name, label, trigger, self.allowed(leaves))
        with self._lock:
            cursor = self._cursor
            self._machine.set_state(state, model=cursor)  # type: ignore[arg-type]
            cursor.taken = None
            fired = self._machine.trigger_event(cursor, trigger, ctx)
            taken = cursor.taken
            reached = cursor.state
        if not fired or taken is None:
            raise TransitionError(
                self.name, label, trigger, self.allowed(leaves), "every guard rejected it"
            )
        return Fired(self.chart.transitions[taken], reached)


def top(state: State) -> str:
    """The top-level state of a path (or of parallel leaves)."""
    first = state if isinstance(state, str) else state[0]
    return first.split(SEP, 1)[0]


def below_top(state: State) -> list[str]:
    """The part of a state under its top-level state: [] for a top-level leaf."""
    leaves = [state] if isinstance(state, str) else state
    return [leaf.split(SEP, 1)[1] for leaf in leaves if SEP in leaf]
