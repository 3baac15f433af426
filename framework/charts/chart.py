"""The Chart: a validated state table with the indexes the engine and renderers read, and how one
is made from YAML or a dict (the format checked field by field, a base it extends merged in,
then the whole graph checked), every problem located by file and line.

The format is spec.py's, the graph rules checks.py's, the merging extend.py's. The names users
imported from 0.1.0's `statesaga.chart` (ChartSpec, chart_json_schema, ...) are all importable
from here, so CHANGELOG.md's one-line move (`statesaga.chart` -> `statesaga.charts.chart`) holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._yaml import LineMap, load_yaml_file
from ..errors import DefinitionError
from ..resources import statecharts_dir
from .checks import graph_problems
from .extend import extend
from .spec import (
    SEP,
    WILDCARD,
    ChartSpec,
    EffectRef,
    StateSpec,
    TransitionSpec,
    ancestors,
    chart_json_schema,
    parse_spec,
    walk,
)

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = [
    "SEP",
    "SHIPPED",
    "WILDCARD",
    "Chart",
    "ChartSpec",
    "EffectRef",
    "StateSpec",
    "TransitionSpec",
    "ancestors",
    "chart_from_data",
    "chart_json_schema",
    "load_chart",
    "shipped_chart",
]

#: The lifecycles shipped in statesaga.statecharts, which a chart may extend by name.
SHIPPED = ("workflow", "step", "todo")


class Chart:
    """A validated chart: the specification plus the indexes the engine and renderers use.

    `states` holds every state by its path (`EXECUTING.CALLING_MODEL` for a child); for a flat
    chart the paths are the names. Sources written as `*` are expanded to every non-final
    top-level state, so `transitions` holds only concrete sources. A transition from a compound
    state applies in each of its descendants.
    """

    def __init__(self, spec: ChartSpec, file: str | None = None, lines: LineMap | None = None):
        self.spec = spec
        self.file = file
        self.lines = lines or LineMap(file)
        self.name = spec.chart
        assert spec.initial is not None  # checked when loaded
        self.initial: str = spec.initial
        self.states: dict[str, StateSpec] = dict(walk(spec.states))
        self.top_states: dict[str, StateSpec] = {st.name: st for st in spec.states}
        self.hierarchical = any(st.states for st in self.states.values())
        self.final_states = frozenset(p for p, st in self.states.items() if st.final)
        non_final = [st.name for st in spec.states if not st.final]
        self.transitions: list[TransitionSpec] = [
            t.model_copy(update={"source": tuple(non_final)}) if WILDCARD in t.source else t
            for t in spec.transitions
        ]
        self._by_source: dict[str, list[TransitionSpec]] = defaultdict(list)
        for t in self.transitions:
            for src in t.source:
                self._by_source[src].append(t)

    def __repr__(self) -> str:
        return (
            f"<Chart {self.name} ({len(self.states)} states, {len(self.transitions)} transitions)>"
        )

    @property
    def triggers(self) -> list[str]:
        return sorted({t.trigger for t in self.transitions})

    def children(self, path: str) -> list[str]:
        return [f"{path}{SEP}{c.name}" for c in self.states[path].states]

    def parent(self, path: str) -> str | None:
        return path.rpartition(SEP)[0] or None

    def entered(self, path: str) -> list[str]:
        """The leaf states that become active when `path` is entered."""
        st = self.states[path]
        if not st.states:
            return [path]
        if st.parallel:
            return [leaf for child in self.children(path) for leaf in self.entered(child)]
        return self.entered(f"{path}{SEP}{st.initial}")

    def allowed_triggers(self, state: str | list[str]) -> list[str]:
        return sorted({t.trigger for t in self.transitions_from(state)})

    def transitions_from(
        self, state: str | list[str], trigger: str | None = None
    ) -> list[TransitionSpec]:
        """Transitions that may fire in `state` (a path, or the active leaves of parallel
        regions), innermost first, as `transitions`' hierarchical machine tries them."""
        leaves = [state] if isinstance(state, str) else state
        out: list[TransitionSpec] = []
        for leaf in leaves:
            for path in ancestors(leaf) if self.hierarchical else [leaf]:
                for t in self._by_source.get(path, ()):
                    if (trigger is None or t.trigger == trigger) and t not in out:
                        out.append(t)
        return out

    def is_final(self, state: str) -> bool:
        return state in self.final_states

    def check_bindings(self, registry: Registry) -> None:
        """Raise DefinitionError listing every effect and guard name the registry lacks."""
        problems = []
        for i, t in enumerate(self.spec.transitions):
            for j, g in enumerate(t.guard_names):
                if not registry.has_guard(g):
                    problems.append(
                        self.lines.problem(("transitions", i, "guards", j), f"unknown guard {g!r}")
                    )
            for j, e in enumerate(t.effect_names):
                if not registry.has_effect(e):
                    problems.append(
                        self.lines.problem(
                            ("transitions", i, "effects", j), f"unknown effect {e!r}"
                        )
                    )
        if problems:
            raise DefinitionError(problems)


def chart_from_data(
    data: Any,
    lines: LineMap | None = None,
    file: str | None = None,
    *,
    _loading: tuple[str, ...] = (),
) -> Chart:
    """Validate parsed data (a dict from YAML or Python) and return the Chart.

    `_loading`: the chart files whose `extends` led here, so a cycle is an error, not a
    RecursionError."""
    lines = lines or LineMap(file)
    spec = parse_spec(data, lines)
    if spec.extends is not None:
        if not _loading and file is not None:
            _loading = (str(Path(file).resolve()),)
        base = _base_chart(spec.extends, file, lines, _loading)
        spec, lines = extend(base, spec, lines)
    problems = graph_problems(spec, lines)
    if problems:
        raise DefinitionError(problems)
    return Chart(spec, file, lines)


def load_chart(source: str | Path | Mapping[str, Any]) -> Chart:
    """Load a chart from a YAML file path or a dict; raise DefinitionError listing every problem."""
    if isinstance(source, Mapping):
        return chart_from_data(source)
    data, lines = load_yaml_file(source)
    return chart_from_data(data, lines, str(source))


@cache
def shipped_chart(name: str) -> Chart:
    """A shipped lifecycle's chart, loaded once per process (lifecycles.py also checks its
    states against the models' status enum)."""
    return load_chart(statecharts_dir() / f"{name}.yaml")


def _base_chart(extends: str, file: str | None, lines: LineMap, loading: tuple[str, ...]) -> Chart:
    if extends in SHIPPED:
        return shipped_chart(extends)
    path = Path(extends)
    if file is not None and not path.is_absolute():
        path = Path(file).parent / path
    if not path.is_file():
        raise DefinitionError(
            [lines.problem(("extends",), f"extends {extends!r}: no such chart file ({path})")]
        )
    key = str(path.resolve())
    if key in loading:
        cycle = " -> ".join(Path(p).name for p in (*loading[loading.index(key) :], key))
        raise DefinitionError([lines.problem(("extends",), f"an extends cycle: {cycle}")])
    data, base_lines = load_yaml_file(path)
    return chart_from_data(data, base_lines, str(path), _loading=(*loading, key))
