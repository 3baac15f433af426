"""Charts: state tables loaded from YAML (or dicts), validated as a whole graph when loaded."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._yaml import LineMap, Loc, load_yaml_file, pydantic_problems
from ..errors import DefinitionError, Problem

if TYPE_CHECKING:
    from ..registry import Registry

WILDCARD = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSpec(_Strict):
    """One state of a chart; with `states` it is compound (one active child, entered at
    `initial`), with `parallel: true` its children are regions that are all active at once."""

    name: str = Field(
        min_length=1, description="the state's name, unique among its siblings (no '.' or '*')"
    )
    description: str = Field("", description="what being in this state means (diagram notes)")
    final: bool = Field(
        False, strict=True, description="nothing leaves it: an end of the lifecycle"
    )
    tags: tuple[str, ...] = Field(
        (), description="labels such as success, failure, rolled_back, halted (diagram colours)"
    )
    initial: str | None = Field(None, description="the child entered first (compound states)")
    parallel: bool = Field(
        False, strict=True, description="children are regions, all active at once"
    )
    states: tuple[StateSpec, ...] = Field((), description="child states")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # `.` separates a child from its parent in paths; `*` alone means "every state".
        if "." in v or v == "*":
            raise ValueError("a state name cannot contain '.' or be '*'")
        return v


class EffectRef(_Strict):
    """An effect named on a transition, with optional keyword arguments."""

    name: str = Field(min_length=1, description="a registered effect (built-in or a plugin's)")
    args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments passed to the effect"
    )

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.args, sort_keys=True, default=str)))


class TransitionSpec(_Strict):
    """trigger: source -> dest, allowed when every guard holds; effects run when it fires.

    A guard written `not NAME` must be false.
    """

    trigger: str = Field(min_length=1, description="the event that fires this transition")
    source: tuple[str, ...] = Field(
        description="the state(s) it leaves, by path (EXECUTING.CALLING_MODEL); a compound "
        "state's transition applies in each of its children"
    )
    dest: str = Field(min_length=1, description="the state it enters, by path")
    guards: tuple[str, ...] = Field(
        (),
        description="registered guards that must all hold (`not NAME`: must not); the first "
        "transition whose guards hold wins",
    )
    effects: tuple[EffectRef, ...] = Field(
        (),
        description="what happens when it fires, in order: `persist`, `{enqueue: {delay: "
        "retry}}` or `{name: ..., args: ...}`",
    )
    description: str = Field("", description="why this transition exists (diagram tooltips)")

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
    description: str = Field("", description="what this lifecycle is for")
    extends: str | None = Field(
        None,
        description="a shipped lifecycle (workflow, step, todo) or a chart file this one adds "
        "sub-states, transitions between them and effects to",
    )
    initial: str | None = Field(None, min_length=1, description="required unless extends")
    states: tuple[StateSpec, ...] = Field(
        (), description="the states, in the order diagrams draw them"
    )
    transitions: tuple[TransitionSpec, ...] = Field(
        (), description="the transitions; for one trigger and state, the first that applies wins"
    )


SEP = "."


def _walk(states: tuple[StateSpec, ...], prefix: str = "") -> list[tuple[str, StateSpec]]:
    out = []
    for st in states:
        path = f"{prefix}{st.name}"
        out.append((path, st))
        out.extend(_walk(st.states, path + SEP))
    return out


def ancestors(path: str) -> list[str]:
    """`A.B.C` -> [`A.B.C`, `A.B`, `A`]: the state itself, then outwards."""
    parts = path.split(SEP)
    return [SEP.join(parts[:i]) for i in range(len(parts), 0, -1)]


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
        self.states: dict[str, StateSpec] = dict(_walk(spec.states))
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


def _state_loc(index: Mapping[str, Loc], path: str) -> Loc:
    return index.get(path, ("states",))


def _graph_problems(spec: ChartSpec, lines: LineMap) -> list[Problem]:
    """Every structural rule, at every level of nesting."""
    problems: list[Problem] = []
    if spec.initial is None:
        return [lines.problem(("initial",), "missing required key 'initial'")]
    if not spec.states:
        return [lines.problem(("states",), "a chart needs at least one state")]

    # States: names unique among siblings, compound and parallel states well formed.
    index: dict[str, Loc] = {}

    def visit(states: tuple[StateSpec, ...], prefix: str, loc: Loc) -> None:
        seen: set[str] = set()
        for i, st in enumerate(states):
            here: Loc = (*loc, i)
            path = f"{prefix}{st.name}"
            if st.name in seen:
                problems.append(lines.problem((*here, "name"), f"duplicate state name {path!r}"))
                continue
            seen.add(st.name)
            index[path] = (*here, "name")
            if st.states:
                if st.final:
                    problems.append(
                        lines.problem(
                            (*here, "final"), f"final state {path!r} cannot have children"
                        )
                    )
                if st.parallel:
                    if st.initial is not None:
                        problems.append(
                            lines.problem(
                                (*here, "initial"),
                                f"parallel state {path!r} enters all its regions; drop 'initial'",
                            )
                        )
                    for j, region in enumerate(st.states):
                        if not region.states:
                            problems.append(
                                lines.problem(
                                    (*here, "states", j, "name"),
                                    f"region {path + SEP + region.name!r} of parallel state "
                                    f"{path!r} needs states of its own",
                                )
                            )
                elif st.initial is None:
                    problems.append(
                        lines.problem(
                            (*here, "name"), f"compound state {path!r} has no initial child"
                        )
                    )
                elif st.initial not in {c.name for c in st.states}:
                    problems.append(
                        lines.problem(
                            (*here, "initial"),
                            f"initial child {st.initial!r} of {path!r} is not one of its states",
                        )
                    )
                visit(st.states, path + SEP, (*here, "states"))
            elif st.parallel or st.initial is not None:
                problems.append(
                    lines.problem(
                        (*here, "name"), f"state {path!r} has 'initial'/'parallel' but no states"
                    )
                )

    visit(spec.states, "", ("states",))
    if any("duplicate state name" not in p.message for p in problems):
        return problems  # the graph rules below need well-formed compound states
    specs = dict(_walk(spec.states))
    finals = {p for p, st in specs.items() if st.final}
    top_non_final = [st.name for st in spec.states if not st.final]
    if spec.initial not in specs or SEP in spec.initial:
        problems.append(
            lines.problem(("initial",), f"initial state {spec.initial!r} is not defined")
        )

    def undefined(path: str) -> str:
        parts = path.split(SEP)
        for n in range(len(parts) - 1, 0, -1):
            known = SEP.join(parts[:n])
            if known in specs:
                if specs[known].parallel:
                    return f"parallel state {known!r} has no region {parts[n]!r}"
                break
        return f"undefined state {path!r}"

    outgoing: dict[str, set[str]] = defaultdict(set)
    unguarded: dict[tuple[str, str], int] = {}
    for i, t in enumerate(spec.transitions):
        sources = t.source
        if WILDCARD in sources:
            if len(sources) > 1:
                problems.append(
                    lines.problem(("transitions", i, "source"), "'*' cannot be mixed with states")
                )
            sources = tuple(top_non_final)
        for src in sources:
            if src not in specs:
                problems.append(
                    lines.problem(
                        ("transitions", i, "source"),
                        f"transition {t.trigger!r} comes from {undefined(src)}",
                    )
                )
            elif any(a in finals for a in ancestors(src)):
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
        if t.dest not in specs:
            problems.append(
                lines.problem(
                    ("transitions", i, "dest"),
                    f"transition {t.trigger!r} goes to {undefined(t.dest)}",
                )
            )

    def children(path: str) -> list[str]:
        return [f"{path}{SEP}{c.name}" for c in specs[path].states]

    def exits(path: str) -> bool:
        return any(outgoing.get(a) for a in ancestors(path))

    # A leaf with no way out traps the instance, unless it is final (a final child completes
    # its parent, which then leaves by the parent's transitions).
    for path, st in specs.items():
        if st.states or st.final or exits(path):
            continue
        problems.append(
            lines.problem(
                _state_loc(index, path),
                f"state {path!r} is not final and has no way out (mark it final or add a "
                "transition)",
            )
        )

    if spec.initial in specs:
        reached: set[str] = set()

        def enter(path: str) -> None:
            for a in ancestors(path):
                reached.add(a)
            st = specs[path]
            if st.states:
                targets = children(path) if st.parallel else [f"{path}{SEP}{st.initial}"]
                for c in targets:
                    if c not in reached:
                        enter(c)

        enter(spec.initial)
        changed = True
        while changed:
            changed = False
            for src, dests in outgoing.items():
                if src not in reached:
                    continue
                for d in dests:
                    if d in specs and d not in reached:
                        enter(d)
                        changed = True
        for path in specs:
            if path not in reached:
                problems.append(
                    lines.problem(
                        _state_loc(index, path),
                        f"state {path!r} is unreachable from the initial state {spec.initial!r}",
                    )
                )
    return problems


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


def _base_chart(extends: str, file: str | None, lines: LineMap, loading: tuple[str, ...]) -> Chart:
    from .lifecycles import ENUMS, lifecycle

    if extends in ENUMS:
        return lifecycle(extends)
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


def _extend(base: Chart, ext: ChartSpec, lines: LineMap) -> tuple[ChartSpec, LineMap]:
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
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a chart must be a mapping")])
    try:
        spec = ChartSpec.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(exc, lines)) from None
    if spec.extends is not None:
        if not _loading and file is not None:
            _loading = (str(Path(file).resolve()),)
        base = _base_chart(spec.extends, file, lines, _loading)
        spec, lines = _extend(base, spec, lines)
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
