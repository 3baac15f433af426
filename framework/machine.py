"""Compile a Chart to one `transitions` Machine and fire triggers on plain state strings.

Why one shared machine with one cursor model, rather than a Machine (or `add_model`) per
instance: building a Machine costs tens of microseconds and kilobytes per instance, and
`Machine.add_model` slows linearly with the number of attached models. Instances here are
documents loaded from a store; only their state string matters to the machine. So each
compiled chart keeps a single cursor, sets its state, fires, and reads the result back
(figures in the foundation issue note and benchmarks/).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from transitions import Machine

from .chart import Chart, TransitionSpec
from .errors import TransitionError

if TYPE_CHECKING:
    from .registry import Registry


class _Cursor:
    """The single model the shared machine drives."""

    state: str
    taken: int | None = None


class CompiledChart:
    """A chart bound to a registry (its guards resolved) and compiled to a `transitions` Machine."""

    def __init__(self, chart: Chart, registry: Registry | None = None) -> None:
        if registry is not None:
            chart.check_bindings(registry)
        self.chart = chart
        self._machine = Machine(
            model=None,
            states=list(chart.states),
            initial=chart.initial,
            auto_transitions=False,
            send_event=False,
            ignore_invalid_triggers=False,
        )
        # Which transition fired is read from the destination when that is unambiguous; only
        # (source, trigger) groups with two candidates to the same destination need a callback.
        self._candidates: dict[tuple[str, str], list[int]] = {}
        for idx, t in enumerate(chart.transitions):
            for src in t.source:
                self._candidates.setdefault((src, t.trigger), []).append(idx)
        ambiguous = {
            i
            for group in self._candidates.values()
            for i in group
            if sum(chart.transitions[j].dest == chart.transitions[i].dest for j in group) > 1
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
                after=[partial(self._record, idx)] if idx in ambiguous else [],
            )
        self._ambiguous = frozenset(ambiguous)
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

    def allowed(self, state: str) -> list[str]:
        return self.chart.allowed_triggers(state)

    def can_fire(self, state: str, trigger: str) -> bool:
        return bool(self.chart.transitions_from(state, trigger))

    def fire(self, state: str, trigger: str, ctx: Any = None) -> TransitionSpec:
        """Fire trigger from state; return the transition taken.

        Raises TransitionError (and changes nothing) when the trigger is not allowed from
        state or every candidate transition's guards reject it.
        """
        group = self._candidates.get((state, trigger))
        if group is None:
            if state not in self.chart.states:
                raise TransitionError(self.name, state, trigger, [], f"unknown state {state!r}")
            raise TransitionError(self.name, state, trigger, self.allowed(state))
        with self._lock:
            cursor = self._cursor
            self._machine.set_state(state, model=cursor)
            cursor.taken = None
            fired = self._events[trigger].trigger(cursor, ctx)
            taken = cursor.taken
            dest = cursor.state
        if not fired:
            raise TransitionError(
                self.name, state, trigger, self.allowed(state), "every guard rejected it"
            )
        if taken is None:
            taken = self._by_dest[(state, trigger, dest)]
        return self.chart.transitions[taken]
