"""Extending a chart: a chart that says `extends: step` (or a chart file) adds sub-states inside
the base's states, transitions among them and effects on the base's transitions, merged here
into one spec. What the engine drives (top-level states, the transitions between them, guards)
stays the base's. Problems are located in the file each part came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._yaml import LineMap, Loc
from ..errors import DefinitionError, Problem
from .spec import SEP, WILDCARD, ChartSpec, TransitionSpec

if TYPE_CHECKING:
    from .chart import Chart


def extend(base: Chart, ext: ChartSpec, lines: LineMap) -> tuple[ChartSpec, LineMap]:
    """Merge an extension into its base. An extension may add sub-states inside the base's
    states, transitions among them, and effects on the base's transitions; it cannot add or
    change what the engine drives (top-level states, transitions between them, guards)."""
    problems: list[Problem] = []
    if ext.initial is not None and ext.initial != base.initial:
        problems.append(
            lines.problem(("initial",), f"an extension keeps the initial state {base.initial!r}")
        )
    merged_states = {st.name: st for st in base.spec.states}
    ext_states: dict[str, int] = {}
    for i, st in enumerate(ext.states):
        old = merged_states.get(st.name)
        if old is None:
            problems.append(
                lines.problem(
                    ("states", i, "name"),
                    f"an extension of {base.name!r} cannot add the top-level state {st.name!r}: "
                    "the engine could not drive it; add sub-states inside an existing state",
                )
            )
            continue
        if st.final != old.final:
            problems.append(
                lines.problem(("states", i, "final"), f"{st.name!r} must keep final={old.final}")
            )
        ext_states[st.name] = i
        merged_states[st.name] = old.model_copy(
            update={
                "states": old.states + st.states,
                "initial": st.initial or old.initial,
                "parallel": st.parallel or old.parallel,
                "description": st.description or old.description,
                "tags": tuple(dict.fromkeys(old.tags + st.tags)),
            }
        )
    base_ts = list(base.spec.transitions)
    new_t: list[int] = []
    added: list[TransitionSpec] = []
    for j, t in enumerate(ext.transitions):
        same = next(
            (
                k
                for k, b in enumerate(base_ts)
                if (b.trigger, b.source, b.dest) == (t.trigger, t.source, t.dest)
            ),
            None,
        )
        if same is not None:
            if t.guards:
                problems.append(
                    lines.problem(
                        ("transitions", j, "guards"),
                        f"an extension may add effects to {base.name}'s {t.trigger!r} "
                        "transition, not guards",
                    )
                )
            base_ts[same] = base_ts[same].model_copy(
                update={"effects": base_ts[same].effects + t.effects}
            )
            continue
        tops = {p.split(SEP)[0] for p in (*t.source, t.dest)}
        if WILDCARD in t.source or len(tops) > 1:
            problems.append(
                lines.problem(
                    ("transitions", j, "dest"),
                    f"an extension of {base.name!r} cannot add {t.trigger!r} from "
                    f"{', '.join(t.source)} to {t.dest}: transitions between the lifecycle's "
                    "own states are the engine's; add transitions between sub-states of one "
                    "state (or effects on an existing transition)",
                )
            )
            continue
        new_t.append(j)
        added.append(t)
    if problems:
        raise DefinitionError(problems)
    spec = ChartSpec(
        chart=ext.chart,
        extends=ext.extends,
        description=ext.description or base.spec.description,
        initial=base.initial,
        states=tuple(merged_states.values()),
        transitions=tuple(base_ts) + tuple(added),
    )
    return spec, _MergedLines(base, lines, ext_states, new_t)


class _MergedLines(LineMap):
    """Locates problems of an extended chart in the file each part came from."""

    def __init__(self, base: Chart, ext: LineMap, ext_states: dict[str, int], new_t: list[int]):
        super().__init__(ext.file)
        self._base = base
        self._ext = ext
        self._ext_states = ext_states
        self._new_t = new_t
        self._nb = len(base.spec.transitions)

    def _route(self, loc: Loc) -> tuple[LineMap, Loc]:
        if len(loc) >= 2 and loc[0] == "transitions" and isinstance(loc[1], int):
            k = loc[1]
            if k >= self._nb:
                return self._ext, ("transitions", self._new_t[k - self._nb], *loc[2:])
            return self._base.lines, loc
        if len(loc) >= 3 and loc[0] == "states" and isinstance(loc[1], int):
            name = (
                self._base.spec.states[loc[1]].name
                if loc[1] < len(self._base.spec.states)
                else None
            )
            if name in self._ext_states and loc[2] != "name":
                base_children = len(self._base.spec.states[loc[1]].states)
                rest = list(loc[2:])
                if rest[0] == "states" and len(rest) > 1 and isinstance(rest[1], int):
                    rest[1] -= base_children
                return self._ext, ("states", self._ext_states[name], *rest)
        return self._base.lines, loc

    def line(self, loc: Loc) -> int | None:
        target, routed = self._route(tuple(loc))
        return target.line(routed)

    def problem(self, loc: Loc, message: str) -> Problem:
        target, routed = self._route(tuple(loc))
        return target.problem(routed, message)
