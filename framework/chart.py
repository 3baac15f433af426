"""Charts: state tables loaded from YAML (or dicts), validated as a whole graph when loaded."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._yaml import LineMap, load_yaml_file, pydantic_problems
from .errors import DefinitionError, Problem

if TYPE_CHECKING:
    from .registry import Registry

WILDCARD = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSpec(_Strict):
    """One state of a chart."""

    name: str = Field(min_length=1)
    description: str = ""
    final: bool = False
    tags: tuple[str, ...] = ()


class EffectRef(_Strict):
    """An effect named on a transition, with optional keyword arguments."""

    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.args, sort_keys=True, default=str)))


class TransitionSpec(_Strict):
    """trigger: source -> dest, allowed when every guard holds; effects run when it fires.

    A guard written `not NAME` must be false.
    """

    trigger: str = Field(min_length=1)
    source: tuple[str, ...]
    dest: str = Field(min_length=1)
    guards: tuple[str, ...] = ()
    effects: tuple[EffectRef, ...] = ()
    description: str = ""

    @field_validator("source", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("guards", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _guard_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("effects", mode="before", json_schema_input_type=list[str | dict[str, Any]])
    @classmethod
    def _effect_refs(cls, v: Any) -> Any:
        """Accept `persist`, `{enqueue: {delay: retry}}` or `{name: ..., args: ...}`."""
        if isinstance(v, str | dict):
            v = [v]
        out: list[Any] = []
        for item in v or ():
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and len(item) == 1 and "name" not in item:
                ((name, args),) = item.items()
                if args is None:
                    args = {}
                elif not isinstance(args, dict):
                    # `{workflow: advance}`: a single scalar argument is passed as `value`.
                    args = {"value": args}
                out.append({"name": name, "args": args})
            else:
                out.append(item)
        return out

    @property
    def guard_names(self) -> list[str]:
        return [g.removeprefix("not ").strip() for g in self.guards]

    @property
    def effect_names(self) -> list[str]:
        return [e.name for e in self.effects]


class ChartSpec(_Strict):
    """The YAML format of a state table (its JSON Schema is published as chart.schema.json)."""

    chart: str = Field(min_length=1, description="the chart's name")
    description: str = ""
    initial: str = Field(min_length=1)
    states: tuple[StateSpec, ...] = Field(min_length=1)
    transitions: tuple[TransitionSpec, ...] = ()


class Chart:
    """A validated chart: the specification plus the indexes the engine and renderers use.

    Sources written as `*` are expanded to every non-final state, so `transitions` holds only
    concrete sources.
    """

    def __init__(self, spec: ChartSpec, file: str | None = None, lines: LineMap | None = None):
        self.spec = spec
        self.file = file
        self.lines = lines or LineMap(file)
        self.name = spec.chart
        self.initial = spec.initial
        self.states: dict[str, StateSpec] = {s.name: s for s in spec.states}
        self.final_states = frozenset(s.name for s in spec.states if s.final)
        non_final = [s.name for s in spec.states if not s.final]
        self.transitions: list[TransitionSpec] = [
            t.model_copy(update={"source": tuple(non_final)}) if WILDCARD in t.source else t
            for t in spec.transitions
        ]
        self._by_source: dict[str, list[TransitionSpec]] = defaultdict(list)
        for t in self.transitions:
            for s in t.source:
                self._by_source[s].append(t)

    def __repr__(self) -> str:
        return (
            f"<Chart {self.name} ({len(self.states)} states, {len(self.transitions)} transitions)>"
        )

    @property
    def triggers(self) -> list[str]:
        return sorted({t.trigger for t in self.transitions})

    def allowed_triggers(self, state: str) -> list[str]:
        return sorted({t.trigger for t in self._by_source.get(state, ())})

    def transitions_from(self, state: str, trigger: str | None = None) -> list[TransitionSpec]:
        return [
            t for t in self._by_source.get(state, ()) if trigger is None or t.trigger == trigger
        ]

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


def _graph_problems(spec: ChartSpec, lines: LineMap) -> list[Problem]:
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for i, s in enumerate(spec.states):
        if s.name == WILDCARD:
            problems.append(lines.problem(("states", i, "name"), "'*' is not a valid state name"))
        if s.name in names:
            problems.append(
                lines.problem(("states", i, "name"), f"duplicate state name {s.name!r}")
            )
        else:
            names[s.name] = i
    finals = {s.name for s in spec.states if s.final}
    if spec.initial not in names:
        problems.append(
            lines.problem(("initial",), f"initial state {spec.initial!r} is not defined")
        )

    outgoing: dict[str, set[str]] = defaultdict(set)
    unguarded: dict[tuple[str, str], int] = {}
    for i, t in enumerate(spec.transitions):
        sources = t.source
        if WILDCARD in sources:
            if len(sources) > 1:
                problems.append(
                    lines.problem(("transitions", i, "source"), "'*' cannot be mixed with states")
                )
            sources = tuple(n for n in names if n not in finals)
        for src in sources:
            if src not in names:
                problems.append(
                    lines.problem(
                        ("transitions", i, "source"),
                        f"transition {t.trigger!r} comes from undefined state {src!r}",
                    )
                )
            elif src in finals:
                problems.append(
                    lines.problem(
                        ("transitions", i, "source"),
                        f"final state {src!r} has an outgoing transition {t.trigger!r}",
                    )
                )
            else:
                outgoing[src].add(t.dest)
            if not t.guards:
                key = (src, t.trigger)
                if key in unguarded:
                    problems.append(
                        lines.problem(
                            ("transitions", i, "trigger"),
                            f"non-deterministic: trigger {t.trigger!r} from {src!r} has two "
                            f"unguarded transitions (see also transitions[{unguarded[key]}])",
                        )
                    )
                else:
                    unguarded[key] = i
        if t.dest not in names:
            problems.append(
                lines.problem(
                    ("transitions", i, "dest"),
                    f"transition {t.trigger!r} goes to undefined state {t.dest!r}",
                )
            )

    for name, i in names.items():
        if name not in finals and not outgoing.get(name):
            problems.append(
                lines.problem(
                    ("states", i, "name"),
                    f"state {name!r} is not final and has no way out (mark it final or add a "
                    "transition)",
                )
            )

    if spec.initial in names:
        seen = {spec.initial}
        todo = deque([spec.initial])
        while todo:
            for nxt in outgoing.get(todo.popleft(), ()):
                if nxt in names and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for name, i in names.items():
            if name not in seen:
                problems.append(
                    lines.problem(
                        ("states", i, "name"),
                        f"state {name!r} is unreachable from the initial state {spec.initial!r}",
                    )
                )
    return problems


def chart_from_data(data: Any, lines: LineMap | None = None, file: str | None = None) -> Chart:
    """Validate parsed data (a dict from YAML or Python) and return the Chart."""
    lines = lines or LineMap(file)
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a chart must be a mapping")])
    try:
        spec = ChartSpec.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(exc, lines)) from None
    problems = _graph_problems(spec, lines)
    if problems:
        raise DefinitionError(problems)
    return Chart(spec, file, lines)


def load_chart(source: str | Path | Mapping[str, Any]) -> Chart:
    """Load a chart from a YAML file path or a dict; raise DefinitionError listing every problem."""
    if isinstance(source, Mapping):
        return chart_from_data(source)
    data, lines = load_yaml_file(source)
    return chart_from_data(data, lines, str(source))


def chart_json_schema() -> dict[str, Any]:
    """The JSON Schema of the chart YAML format, generated from the models."""
    schema = ChartSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://statesaga.dev/schema/chart.schema.json"
    schema["title"] = "statesaga chart"
    return schema
