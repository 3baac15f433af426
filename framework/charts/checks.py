"""The rules a chart must satisfy as a whole graph, one named function per rule.

The schema (spec.py) checks each field; these rules need the whole table: every state
reachable, none a trap, every transition between defined states, one unguarded choice per
trigger and state, compound and parallel states well formed at every level of nesting.
`CHECKS` lists them in the order they run; each returns its problems located in the file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from .._yaml import LineMap, Loc
from ..errors import Problem
from .spec import SEP, WILDCARD, ChartSpec, StateSpec, TransitionSpec, ancestors, walk


@dataclass(frozen=True)
class _Placed:
    """A state as written: its path, its spec, where it is in the file, and whether an
    earlier sibling already has its name (the later one is then ignored, children too)."""

    path: str
    state: StateSpec
    loc: Loc
    duplicate: bool


def _placed(states: tuple[StateSpec, ...], prefix: str, loc: Loc) -> Iterator[_Placed]:
    seen: set[str] = set()
    for i, st in enumerate(states):
        here: Loc = (*loc, i)
        path = f"{prefix}{st.name}"
        duplicate = st.name in seen
        seen.add(st.name)
        yield _Placed(path, st, here, duplicate)
        if not duplicate:
            yield from _placed(st.states, path + SEP, (*here, "states"))


@dataclass
class _Graph:
    """What the rules read, worked out once from the spec."""

    spec: ChartSpec
    lines: LineMap
    placed: list[_Placed] = field(init=False)
    #: every state by path
    states: dict[str, StateSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.placed = list(_placed(self.spec.states, "", ("states",)))
        self.states = dict(walk(self.spec.states))

    def problem(self, loc: Loc, message: str) -> Problem:
        return self.lines.problem(loc, message)

    def where(self, path: str) -> Loc:
        """Where a state's name is written (the states list when it is not)."""
        return next(
            ((*p.loc, "name") for p in self.placed if p.path == path and not p.duplicate),
            ("states",),
        )

    @cached_property
    def finals(self) -> set[str]:
        return {p for p, st in self.states.items() if st.final}

    def sources(self, t: TransitionSpec) -> tuple[str, ...]:
        """The states a transition leaves, `*` standing for every non-final top-level one."""
        if WILDCARD in t.source:
            return tuple(st.name for st in self.spec.states if not st.final)
        return t.source

    @cached_property
    def outgoing(self) -> dict[str, set[str]]:
        """The destinations of the transitions from each defined, non-final source."""
        out: dict[str, set[str]] = defaultdict(set)
        for t in self.spec.transitions:
            for src in self.sources(t):
                if src in self.states and not any(a in self.finals for a in ancestors(src)):
                    out[src].add(t.dest)
        return out

    def children(self, path: str) -> list[str]:
        return [f"{path}{SEP}{c.name}" for c in self.states[path].states]

    def undefined(self, path: str) -> str:
        """Why `path` names no state, said as precisely as the chart allows."""
        parts = path.split(SEP)
        for n in range(len(parts) - 1, 0, -1):
            known = SEP.join(parts[:n])
            if known in self.states:
                if self.states[known].parallel:
                    return f"parallel state {known!r} has no region {parts[n]!r}"
                break
        return f"undefined state {path!r}"


Check = Callable[[_Graph], list[Problem]]


# -- the chart has something to check ------------------------------------------------------


def _check_initial_is_given(g: _Graph) -> list[Problem]:
    if g.spec.initial is None:
        return [g.problem(("initial",), "missing required key 'initial'")]
    return []


def _check_has_states(g: _Graph) -> list[Problem]:
    if not g.spec.states:
        return [g.problem(("states",), "a chart needs at least one state")]
    return []


# -- the state tree, at every level of nesting ---------------------------------------------


def _check_unique_state_names(g: _Graph) -> list[Problem]:
    """Names are unique among siblings (a path names one state)."""
    return [
        g.problem((*p.loc, "name"), f"duplicate state name {p.path!r}")
        for p in g.placed
        if p.duplicate
    ]


def _check_final_states_are_leaves(g: _Graph) -> list[Problem]:
    return [
        g.problem((*p.loc, "final"), f"final state {p.path!r} cannot have children")
        for p in g.placed
        if not p.duplicate and p.state.states and p.state.final
    ]


def _check_parallel_states(g: _Graph) -> list[Problem]:
    """A parallel state enters all its regions (so names no initial one), and each region is
    a compound state of its own."""
    problems = []
    for p in g.placed:
        st = p.state
        if p.duplicate or not (st.states and st.parallel):
            continue
        if st.initial is not None:
            problems.append(
                g.problem(
                    (*p.loc, "initial"),
                    f"parallel state {p.path!r} enters all its regions; drop 'initial'",
                )
            )
        for j, region in enumerate(st.states):
            if not region.states:
                problems.append(
                    g.problem(
                        (*p.loc, "states", j, "name"),
                        f"region {p.path + SEP + region.name!r} of parallel state "
                        f"{p.path!r} needs states of its own",
                    )
                )
    return problems


def _check_compound_states_have_initial_child(g: _Graph) -> list[Problem]:
    problems = []
    for p in g.placed:
        st = p.state
        if p.duplicate or not st.states or st.parallel:
            continue
        if st.initial is None:
            problems.append(
                g.problem((*p.loc, "name"), f"compound state {p.path!r} has no initial child")
            )
        elif st.initial not in {c.name for c in st.states}:
            problems.append(
                g.problem(
                    (*p.loc, "initial"),
                    f"initial child {st.initial!r} of {p.path!r} is not one of its states",
                )
            )
    return problems


def _check_leaves_are_plain(g: _Graph) -> list[Problem]:
    """`initial` and `parallel` describe children; a state without children has neither."""
    return [
        g.problem((*p.loc, "name"), f"state {p.path!r} has 'initial'/'parallel' but no states")
        for p in g.placed
        if not p.duplicate
        and not p.state.states
        and (p.state.parallel or p.state.initial is not None)
    ]


# -- the transitions -----------------------------------------------------------------------


def _check_initial_state_exists(g: _Graph) -> list[Problem]:
    initial = g.spec.initial
    if initial not in g.states or SEP in str(initial):
        return [g.problem(("initial",), f"initial state {initial!r} is not defined")]
    return []


def _check_wildcard_stands_alone(g: _Graph) -> list[Problem]:
    return [
        g.problem(("transitions", i, "source"), "'*' cannot be mixed with states")
        for i, t in enumerate(g.spec.transitions)
        if WILDCARD in t.source and len(t.source) > 1
    ]


def _check_sources_exist(g: _Graph) -> list[Problem]:
    return [
        g.problem(
            ("transitions", i, "source"), f"transition {t.trigger!r} comes from {g.undefined(src)}"
        )
        for i, t in enumerate(g.spec.transitions)
        for src in g.sources(t)
        if src not in g.states
    ]


def _check_final_states_have_no_way_out(g: _Graph) -> list[Problem]:
    """Nothing leaves a final state, nor any state inside one."""
    return [
        g.problem(
            ("transitions", i, "source"),
            f"final state {src!r} has an outgoing transition {t.trigger!r}",
        )
        for i, t in enumerate(g.spec.transitions)
        for src in g.sources(t)
        if src in g.states and any(a in g.finals for a in ancestors(src))
    ]


def _check_deterministic_triggers(g: _Graph) -> list[Problem]:
    """For one trigger and state, at most one transition without guards (a second could
    never fire, so writing it is a mistake)."""
    problems = []
    unguarded: dict[tuple[str, str], int] = {}
    for i, t in enumerate(g.spec.transitions):
        if t.guards:
            continue
        for src in g.sources(t):
            key = (src, t.trigger)
            if key in unguarded:
                problems.append(
                    g.problem(
                        ("transitions", i, "trigger"),
                        f"non-deterministic: trigger {t.trigger!r} from {src!r} has two "
                        f"unguarded transitions (see also transitions[{unguarded[key]}])",
                    )
                )
            else:
                unguarded[key] = i
    return problems


def _check_destinations_exist(g: _Graph) -> list[Problem]:
    return [
        g.problem(
            ("transitions", i, "dest"), f"transition {t.trigger!r} goes to {g.undefined(t.dest)}"
        )
        for i, t in enumerate(g.spec.transitions)
        if t.dest not in g.states
    ]


# -- the graph as a whole ------------------------------------------------------------------


def _check_trap_states(g: _Graph) -> list[Problem]:
    """A leaf with no way out traps the instance, unless it is final (a final child completes
    its parent, which then leaves by the parent's transitions)."""
    return [
        g.problem(
            g.where(path),
            f"state {path!r} is not final and has no way out (mark it final or add a transition)",
        )
        for path, st in g.states.items()
        if not (st.states or st.final or any(g.outgoing.get(a) for a in ancestors(path)))
    ]


def _check_reachable_states(g: _Graph) -> list[Problem]:
    """Every state can be entered from the initial one (entering a compound state enters its
    initial child, or all regions of a parallel one, and every state around it)."""
    initial = g.spec.initial
    if initial not in g.states:
        return []  # _check_initial_state_exists says so
    reached: set[str] = set()

    def enter(path: str) -> None:
        reached.update(ancestors(path))
        st = g.states[path]
        if st.states:
            targets = g.children(path) if st.parallel else [f"{path}{SEP}{st.initial}"]
            for c in targets:
                if c not in reached:
                    enter(c)

    enter(initial)
    changed = True
    while changed:
        changed = False
        for src, dests in g.outgoing.items():
            if src not in reached:
                continue
            for d in dests:
                if d in g.states and d not in reached:
                    enter(d)
                    changed = True
    return [
        g.problem(
            g.where(path), f"state {path!r} is unreachable from the initial state {initial!r}"
        )
        for path in g.states
        if path not in reached
    ]


#: Every rule, in the order it runs, in stages: a stage's rules rely on what the stages
#: before it guarantee, so checking ends with the first stage that finds a problem (a
#: duplicate name excepted: the later rules read the first state of that name).
CHECKS: tuple[tuple[Check, ...], ...] = (
    (_check_initial_is_given,),
    (_check_has_states,),
    (
        _check_unique_state_names,
        _check_final_states_are_leaves,
        _check_parallel_states,
        _check_compound_states_have_initial_child,
        _check_leaves_are_plain,
    ),
    (
        _check_initial_state_exists,
        _check_wildcard_stands_alone,
        _check_sources_exist,
        _check_final_states_have_no_way_out,
        _check_deterministic_triggers,
        _check_destinations_exist,
        _check_trap_states,
        _check_reachable_states,
    ),
)
_NOT_BLOCKING: frozenset[Check] = frozenset({_check_unique_state_names})


def graph_problems(spec: ChartSpec, lines: LineMap) -> list[Problem]:
    """Every problem the rules find in the chart, located in its file."""
    graph = _Graph(spec, lines)
    problems: list[Problem] = []
    for stage in CHECKS:
        blocked = False
        for check in stage:
            found = check(graph)
            problems.extend(found)
            blocked = blocked or bool(found and check not in _NOT_BLOCKING)
        if blocked:
            break
    return problems
