"""The rules a saga's table must satisfy as a whole, one named function per rule.

The schema (spec.py) checks each field; these rules need the whole table: unique step names,
dependencies on other steps and without a cycle, one pivot that nothing undoes, and `${...}`
references to what exists when the handler runs. `CHECKS` lists them in the order they run;
each returns its problems located in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from .._yaml import LineMap, Loc
from ..errors import Problem
from .params import param_sets, references
from .spec import DefinitionSpec, dependencies, depends_on


@dataclass
class _Steps:
    """What the rules read, worked out once from the spec."""

    spec: DefinitionSpec
    lines: LineMap

    @cached_property
    def index(self) -> dict[str, int]:
        """Where each step name is first written."""
        index: dict[str, int] = {}
        for i, s in enumerate(self.spec.steps):
            index.setdefault(s.name, i)
        return index

    @cached_property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return dependencies(self.spec)

    @cached_property
    def cycles(self) -> list[tuple[str, list[str]]]:
        """Each dependency cycle found by a depth-first search, with the step it is reported
        on (unknown and self dependencies are other rules')."""
        found: list[tuple[str, list[str]]] = []
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            for d in self.deps.get(name, ()):
                if d not in self.index or d == name:
                    continue
                if state.get(d) == 1:
                    found.append((name, path[path.index(d) :] + [d] if d in path else [name, d]))
                elif d not in state:
                    visit(d, [*path, d])
            state[name] = 2

        for name in self.index:
            if name not in state:
                visit(name, [name])
        return found

    @cached_property
    def pivots(self) -> list[str]:
        return [s.name for s in self.spec.steps if s.pivot]


def _check_unique_step_names(g: _Steps) -> list[Problem]:
    return [
        g.lines.problem(("steps", i, "name"), f"duplicate step name {s.name!r}")
        for i, s in enumerate(g.spec.steps)
        if g.index[s.name] != i
    ]


def _check_dependencies_are_other_steps(g: _Steps) -> list[Problem]:
    problems = []
    for i, s in enumerate(g.spec.steps):
        for j, d in enumerate(s.depends_on or ()):
            if d not in g.index:
                problems.append(
                    g.lines.problem(
                        ("steps", i, "depends_on", j),
                        f"step {s.name!r} depends on unknown step {d!r}",
                    )
                )
            elif d == s.name:
                problems.append(
                    g.lines.problem(
                        ("steps", i, "depends_on", j), f"step {s.name!r} depends on itself"
                    )
                )
    return problems


def _check_no_dependency_cycle(g: _Steps) -> list[Problem]:
    return [
        g.lines.problem(
            ("steps", g.index[name], "depends_on"), "dependency cycle: " + " -> ".join(cycle)
        )
        for name, cycle in g.cycles
    ]


def _check_one_pivot(g: _Steps) -> list[Problem]:
    return [
        g.lines.problem(("steps", g.index[extra], "pivot"), f"more than one pivot step ({extra!r})")
        for extra in g.pivots[1:]
    ]


def _check_pivot_is_not_compensated(g: _Steps) -> list[Problem]:
    """The pivot is the point of no return: nothing undoes it."""
    if not g.pivots or g.cycles:  # with a cycle, _check_no_dependency_cycle speaks for it
        return []
    pivot = g.pivots[0]
    if g.spec.steps[g.index[pivot]].compensation is None:
        return []
    return [
        g.lines.problem(
            ("steps", g.index[pivot], "compensation"),
            f"pivot step {pivot!r} cannot have a compensation: it is the point of no return",
        )
    ]


def _check_nothing_after_the_pivot_is_compensated(g: _Steps) -> list[Problem]:
    """A step after the pivot runs only once the saga cannot turn back, so it is retried
    forward, never undone."""
    if not g.pivots or g.cycles:  # "after" means nothing in a cycle
        return []
    pivot = g.pivots[0]
    return [
        g.lines.problem(
            ("steps", g.index[s.name], "compensation"),
            f"step {s.name!r} runs after the pivot {pivot!r} and so cannot be compensated"
            " (remove its compensation; it is retried forward instead)",
        )
        for s in g.spec.steps
        if s.compensation is not None and depends_on(s.name, pivot, g.deps)
    ]


def _check_references(g: _Steps) -> list[Problem]:
    """A `${...}` must name something that exists when the handler runs: the input, a step
    that has finished before this one (a dependency, directly or not), or, in a
    compensation, the step's own `result`."""
    names = {s.name for s in g.spec.steps}
    declared = g.spec.input
    problems: list[Problem] = []
    for i, step in enumerate(g.spec.steps):
        for where, params in param_sets(step):
            loc: Loc = (
                ("steps", i, "params")
                if where == "params"
                else ("steps", i, "compensation", "params")
            )
            for ref in references(params):
                parts = ref.split(".")
                root = parts[0]
                why = None
                if root == "input":
                    if (
                        declared is not None
                        and not declared.additional_properties
                        and len(parts) > 1
                        and parts[1] not in declared.properties
                    ):
                        why = f"the input declares no {parts[1]!r}"
                elif root == "steps":
                    other = parts[1] if len(parts) > 1 else ""
                    if other not in names:
                        why = f"there is no step {other!r}"
                    elif other == step.name and where == "params":
                        why = f"step {other!r} has no result while it runs"
                    elif other != step.name and not depends_on(step.name, other, g.deps):
                        why = (
                            f"step {other!r} does not finish before {step.name!r} starts "
                            f"(add it to depends_on)"
                        )
                elif root == "result":
                    if where == "params":
                        why = "`result` is the step's own result, only known to its compensation"
                else:
                    why = "a reference starts with input., steps. or result."
                if why is not None:
                    problems.append(g.lines.problem(loc, f"${{{ref}}}: {why}"))
    return problems


#: Every rule, in the order it runs, in stages: references follow dependencies, so they are
#: checked only once the steps and their dependencies make sense.
CHECKS: tuple[tuple[Callable[[_Steps], list[Problem]], ...], ...] = (
    (
        _check_unique_step_names,
        _check_dependencies_are_other_steps,
        _check_no_dependency_cycle,
        _check_one_pivot,
        _check_pivot_is_not_compensated,
        _check_nothing_after_the_pivot_is_compensated,
    ),
    (_check_references,),
)


def definition_problems(spec: DefinitionSpec, lines: LineMap) -> list[Problem]:
    """Every problem the rules find in the saga's table, located in its file."""
    steps = _Steps(spec, lines)
    for stage in CHECKS:
        problems = [p for check in stage for p in check(steps)]
        if problems:
            return problems
    return []
