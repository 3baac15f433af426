"""The chart format: what a state table written in YAML may say (pydantic models, published as
chart.schema.json), and how its states are named by path (`EXECUTING.CALLING_MODEL`).

Validation here is per field; whether the states and transitions make a sound graph is
checks.py's, since that needs the whole table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._yaml import LineMap, pydantic_problems
from ..errors import DefinitionError

#: A transition source standing for every non-final top-level state.
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


#: Separates a child state's name from its parent's in a path.
SEP = "."


def walk(states: tuple[StateSpec, ...], prefix: str = "") -> list[tuple[str, StateSpec]]:
    """Every state under `states` with its path, parents before their children."""
    out = []
    for st in states:
        path = f"{prefix}{st.name}"
        out.append((path, st))
        out.extend(walk(st.states, path + SEP))
    return out


def ancestors(path: str) -> list[str]:
    """`A.B.C` -> [`A.B.C`, `A.B`, `A`]: the state itself, then outwards."""
    parts = path.split(SEP)
    return [SEP.join(parts[:i]) for i in range(len(parts), 0, -1)]


def parse_spec(data: Any, lines: LineMap) -> ChartSpec:
    """Validate parsed data (a dict from YAML or Python) against the format; raise
    DefinitionError locating every field that does not fit."""
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a chart must be a mapping")])
    try:
        return ChartSpec.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(exc, lines)) from None


def chart_json_schema() -> dict[str, Any]:
    """The JSON Schema of the chart YAML format, generated from the models."""
    schema = ChartSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://statesaga.dev/schema/chart.schema.json"
    schema["title"] = "statesaga chart"
    return schema
