"""WorkflowDefinition: a user's saga written as a table of steps (YAML or a dict)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import vocabulary
from ._yaml import LineMap, Loc, load_yaml_file, pydantic_problems
from .charts.chart import Chart, load_chart
from .errors import DefinitionError, InputError, Problem
from .models import (
    CompensationAction,
    CompensationStrategy,
    OnTimeout,
    PositiveSeconds,
    RetryPolicy,
    SagaStep,
    Seconds,
    StepKind,
    WorkflowState,
    new_id,
    utcnow,
)
from .plugins import lifecycle_chart
from .security.limits import json_problems, json_size, max_input_bytes

if TYPE_CHECKING:
    from .registry import Registry
    from .security.allowlist import AllowList

# How a handler gets registered; a plain script's @handler functions are not until given.
_HOW = (
    " (register it: Engine(..., handlers=[module or function]) in Python, "
    "--handlers MODULE or STATESAGA_HANDLERS on the command line)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompensationSpec(_Strict):
    """How a completed step is undone (or just the handler's name)."""

    action: str = Field(min_length=1, description="the handler that undoes the step")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="its parameters; `${result.x}` is the step's own result, `${input.x}` the "
        "workflow's input",
    )
    retry: RetryPolicy | None = Field(
        None, description="fields laid over defaults.compensation_retry"
    )


class StepSpec(_Strict):
    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="the step's name, unique in the saga; `${steps.NAME.x}` reads its result",
    )
    kind: StepKind = Field(
        "action",
        description="action (the default): runs `action`; wait: waits for `signal`; sleep: "
        "waits `duration` seconds or `until` a time. Inferred from signal/duration/until",
    )
    action: str | None = Field(None, min_length=1, description="the handler of an action step")
    signal: str | None = Field(
        None, min_length=1, description="a wait step: the name of the signal it waits for"
    )
    await_signal: str | None = Field(None, description="the same as `signal`")
    on_timeout: OnTimeout = Field(
        "fail",
        description="a wait step whose `timeout` passes: fail (the saga unwinds) or continue "
        "with `default` as its result",
    )
    default: Any = Field(None, description="a wait step's result when it continues on timeout")
    payload: InputSchema | None = Field(
        None,
        description="a wait step: what its signal's payload must be (JSON Schema: type, "
        "properties, required, additionalProperties), checked by `signal` before anything "
        "is stored",
    )
    duration: Seconds | None = Field(None, description="a sleep step: seconds")
    until: datetime | None = Field(None, description="a sleep step: the time to wake up")
    description: str = Field("", description="what the step does (diagram notes)")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the handler's parameters; `${input.x}` and `${steps.NAME.x}` are resolved",
    )
    compensation: CompensationSpec | None = Field(
        None, description="how to undo the step when the saga unwinds (a handler name, or more)"
    )
    retry: RetryPolicy | None = Field(
        None, description="fields laid over defaults.retry (the rest keep the saga's values)"
    )
    timeout: PositiveSeconds | None = Field(
        None, description="seconds an attempt may run (a wait step: seconds to wait)"
    )
    pivot: bool = Field(
        False,
        strict=True,
        description="the point of no return: once it may have applied, later failures are "
        "retried forward, never compensated",
    )
    depends_on: tuple[str, ...] | None = Field(
        None, description="absent: the previous step; [] : none (starts at once)"
    )
    read_only: bool = Field(
        False,
        strict=True,
        description="the step only reads (a lookup, a quote): it has no effect to undo or to "
        "leave behind, so a lost attempt of it is no effect that may remain",
    )

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("await_signal") is not None and data.get("signal") is None:
            data["signal"] = data["await_signal"]
        if "kind" not in data:
            if data.get("signal") is not None:
                data["kind"] = "wait"
            elif data.get("duration") is not None or data.get("until") is not None:
                data["kind"] = "sleep"
        return data

    @model_validator(mode="after")
    def _kind_fits(self) -> StepSpec:
        kind = self.kind
        if kind == "action":
            if self.action is None:
                raise ValueError(
                    f"step {self.name!r} needs an `action` (or `kind: wait` with a `signal`, "
                    "or `kind: sleep` with a `duration`)"
                )
            if self.read_only and (self.compensation is not None or self.pivot):
                what = "be the pivot" if self.pivot else "have a compensation"
                raise ValueError(
                    f"step {self.name!r} is read_only (it has no effect), so it cannot {what}"
                )
            return self
        if self.action is not None:
            raise ValueError(f"a {kind} step runs no action; remove `action` from {self.name!r}")
        if self.compensation is not None:
            raise ValueError(f"a {kind} step has nothing to undo; remove its compensation")
        if self.pivot:
            raise ValueError(f"a {kind} step cannot be the pivot")
        if self.payload is not None and kind != "wait":
            raise ValueError(f"a {kind} step takes no signal, so no `payload` schema")
        if self.read_only:
            raise ValueError(f"a {kind} step runs no action; remove `read_only` from {self.name!r}")
        if kind == "wait":
            if self.signal is None:
                raise ValueError(f"wait step {self.name!r} needs a `signal` to wait for")
            if self.duration is not None or self.until is not None:
                raise ValueError("a wait step takes `timeout`, not `duration` or `until`")
            if self.on_timeout == "continue" and self.timeout is None:
                raise ValueError("`on_timeout: continue` needs a `timeout`")
        else:
            if self.signal is not None:
                raise ValueError("a sleep step waits for time, not for a signal")
            if (self.duration is None) == (self.until is None):
                raise ValueError(f"sleep step {self.name!r} needs one of `duration` or `until`")
        return self

    @field_validator("until", mode="after")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        # A wake-up time without a zone is read as UTC, the zone every stored time is in.
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v

    @field_validator(
        "compensation", mode="before", json_schema_input_type=str | CompensationSpec | None
    )
    @classmethod
    def _short_compensation(cls, v: Any) -> Any:
        return {"action": v} if isinstance(v, str) else v

    @field_validator("depends_on", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class Defaults(_Strict):
    """What every step gets unless it says otherwise."""

    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="the retry policy of every action"
    )
    compensation_retry: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(max_attempts=5),
        description="the retry policy of every compensation",
    )
    timeout: PositiveSeconds | None = Field(
        None, description="seconds an action's attempt may run (not a wait's)"
    )


JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]


class InputProperty(_Strict):
    """One input value, as a JSON Schema subset (unknown keywords are errors, not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: JsonType | tuple[JsonType, ...] | None = Field(
        None, description="the JSON type(s) the value may have"
    )
    description: str = Field("", description="what the value is for (shown by `schema`)")
    enum: tuple[Any, ...] | None = Field(None, description="the only values allowed")
    minimum: float | None = Field(None, allow_inf_nan=False, description="smallest number")
    maximum: float | None = Field(None, allow_inf_nan=False, description="largest number")
    min_length: int | None = Field(
        None, alias="minLength", ge=0, description="shortest text or list"
    )
    max_length: int | None = Field(
        None, alias="maxLength", ge=0, description="longest text or list"
    )


class InputSchema(_Strict):
    """What a workflow's input must be (a JSON Schema subset), checked when it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["object"] = Field("object", description="an input is always an object")
    properties: dict[str, InputProperty] = Field(
        default_factory=dict, description="the input's values, by name"
    )
    required: tuple[str, ...] = Field((), description="the values an input must have")
    additional_properties: bool = Field(
        True, alias="additionalProperties", description="false: no value beyond `properties`"
    )

    def json_schema(self, title: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            **self.model_dump(by_alias=True, exclude_defaults=True),
        }
        out["type"] = "object"
        out["properties"] = {
            k: v.model_dump(by_alias=True, exclude_defaults=True)
            for k, v in self.properties.items()
        }
        return out


StepSpec.model_rebuild()  # its `payload` is an InputSchema, defined after it


class DefinitionSpec(_Strict):
    """The YAML format of a workflow definition."""

    workflow: str = Field(min_length=1, description="the workflow's name")
    version: str = Field(
        "1", description="kept on each instance; `statesaga check-upgrade` compares versions"
    )
    description: str = Field("", description="what the saga does (diagram titles)")
    handlers: tuple[str, ...] = Field(
        (),
        description="the handler modules the steps' handlers come from: each must be on the "
        "operator's allow-list (--handlers, STATESAGA_HANDLERS, an installed package's "
        "statesaga.handlers entry point); a hint, never an import instruction",
    )
    strategy: CompensationStrategy = Field(
        CompensationStrategy.BACKWARD,
        description="how completed steps are undone: backward (reverse order), parallel, or "
        "forward_retry (never undo: a failure halts the workflow FAILED for an operator)",
    )
    step_lifecycle: str | None = Field(
        None,
        description="a chart file (relative to this definition) extending the step lifecycle, "
        "e.g. with sub-states inside EXECUTING; the engine running this saga must use it",
    )
    defaults: Defaults = Field(
        default_factory=Defaults, description="retry policies and timeout for every step"
    )
    input: InputSchema | None = Field(
        None,
        description="what the input must be (JSON Schema: type, properties, required, "
        "additionalProperties; per property type, enum, minimum, maximum, minLength, "
        "maxLength), checked when a workflow starts",
    )
    steps: tuple[StepSpec, ...] = Field(
        min_length=1,
        description="the steps, in order (each depends on the previous unless depends_on says)",
    )

    @field_validator("version", mode="before", json_schema_input_type=str | int | float)
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("handlers", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _handler_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class WorkflowDefinition:
    """A validated saga definition; `instantiate` makes a new WorkflowState from it."""

    def __init__(self, spec: DefinitionSpec, file: str | None, lines: LineMap) -> None:
        self.spec = spec
        self.file = file
        self.lines = lines
        self.name = spec.workflow
        self.version = spec.version
        self.steps = spec.steps
        self.dependencies: dict[str, tuple[str, ...]] = _dependencies(spec)
        self._step_chart: Chart | None = None

    def __repr__(self) -> str:
        return f"<WorkflowDefinition {self.name} v{self.version} ({len(self.steps)} steps)>"

    @property
    def pivot(self) -> str | None:
        return next((s.name for s in self.steps if s.pivot), None)

    def step_chart(self) -> Chart | None:
        """The step lifecycle this saga runs on, when it names its own (`step_lifecycle`)."""
        ref = self.spec.step_lifecycle
        if ref is None:
            return None
        if self._step_chart is None:  # parsed once: every start checks it
            path = Path(ref)
            if self.file is not None and not path.is_absolute():
                path = Path(self.file).parent / path
            self._step_chart = load_chart(path)
        return self._step_chart

    def load_handlers(self, registry: Registry, allowed: AllowList) -> None:
        """Register the handler modules `handlers:` names. Each is a hint the operator's
        allow-list must match (statesaga.security.allowlist), never an import instruction: a module
        not allowed is refused here, located at its entry, and nothing is imported."""
        search = [Path(self.file).parent] if self.file is not None else []
        problems = [
            self.lines.problem(("handlers", i), why)
            for i, why in allowed.load(registry, self.spec.handlers, search)
        ]
        if problems:
            raise DefinitionError(problems)

    def check_handlers(self, registry: Registry) -> None:
        """Every action and compensation must name a registered handler."""
        problems = []
        for i, s in enumerate(self.steps):
            if s.action is not None and not registry.has_handler(s.action):
                problems.append(
                    self.lines.problem(
                        ("steps", i, "action"), f"unknown handler {s.action!r}{_HOW}"
                    )
                )
            if s.compensation and not registry.has_handler(s.compensation.action):
                problems.append(
                    self.lines.problem(
                        ("steps", i, "compensation"),
                        f"unknown compensation handler {s.compensation.action!r}{_HOW}",
                    )
                )
        if problems:
            raise DefinitionError(problems)

    def check_input(self, input: Any) -> None:
        """Refuse an input before anything is stored: not a JSON object of plain JSON values,
        larger than the limit, against the definition's `input` schema, or missing a value
        that a step's params reference (which would otherwise fail, and be retried, only
        after earlier steps applied their effects). Raises InputError listing every problem."""
        if input is None:
            input = {}
        if not isinstance(input, Mapping):
            raise InputError([Problem("the input must be a JSON object", "input")])
        problems = [Problem(m, "input") for m in json_problems(dict(input))]
        if problems:
            raise InputError(problems)
        size, limit = json_size(input), max_input_bytes()
        if size > limit:
            raise InputError(
                [
                    Problem(
                        f"the input is {size} bytes of JSON; the limit is {limit} "
                        "(STATESAGA_MAX_INPUT_BYTES): pass a reference to large data instead",
                        "input",
                    )
                ]
            )
        if self.spec.input is not None:
            problems.extend(_schema_problems(self.spec.input, input))
        missing: dict[str, list[str]] = {}  # input path -> who references it
        for step in self.steps:
            for where, params in _param_sets(step):
                for ref in sorted(set(references(params))):
                    root, _, rest = ref.partition(".")
                    if root != "input" or not rest:
                        continue
                    try:
                        _lookup(rest, input)
                    except KeyError:
                        missing.setdefault(rest, []).append(f"{step.name!r} {where}")
        # A value the schema already reports as missing is said once, not twice.
        said = {p.field for p in problems}
        for path, users in missing.items():
            if path in said:
                continue
            problems.append(
                Problem(
                    f"missing: ${{input.{path}}} is referenced by {', '.join(users)}",
                    "input",
                    None,
                    path,
                )
            )
        if problems:
            raise InputError(problems)

    def retry(self, step: StepSpec) -> RetryPolicy:
        """A step's effective retry policy: its own `retry:` fields over the saga's defaults."""
        base = self.spec.defaults.retry
        return step.retry.over(base) if step.retry is not None else base

    def compensation_retry(self, step: StepSpec) -> RetryPolicy | None:
        """The effective retry policy of a step's compensation (None: it has none)."""
        if step.compensation is None:
            return None
        base = self.spec.defaults.compensation_retry
        own = step.compensation.retry
        return own.over(base) if own is not None else base

    def instantiate(
        self, input: Mapping[str, Any] | None = None, session_id: str | None = None
    ) -> WorkflowState:
        """A new PENDING document (`Engine.start` first checks the input: `check_input`)."""
        now = utcnow()
        wf_id = new_id("WF", now)
        d = self.spec.defaults
        steps = []
        for s in self.steps:
            comp = None
            if s.compensation is not None:
                comp = CompensationAction(
                    id=new_id("COMP", now),
                    step_id=s.name,
                    action_type=s.compensation.action,
                    params=dict(s.compensation.params),
                    retry=self.compensation_retry(s) or d.compensation_retry,
                )
            waits = s.kind != "action"
            steps.append(
                SagaStep(
                    id=f"{wf_id}:{s.name}",
                    name=s.name,
                    action_type=s.action or "",
                    params=dict(s.params),
                    depends_on=list(self.dependencies[s.name]),
                    retry=self.retry(s),
                    # The default timeout is for actions; a wait (for a person) has its own.
                    timeout=s.timeout if waits else s.timeout or d.timeout,
                    pivot=s.pivot,
                    read_only=s.read_only,
                    compensation=comp,
                    kind=s.kind,
                    signal=s.signal,
                    on_timeout=s.on_timeout,
                    default=s.default,
                    sleep=s.duration,
                    until=s.until,
                    payload=None
                    if s.payload is None
                    else s.payload.model_dump(by_alias=True, exclude_defaults=True),
                )
            )
        return WorkflowState(
            id=wf_id,
            name=self.name,
            version=self.version,
            session_id=session_id,
            strategy=self.spec.strategy,
            handlers=list(self.spec.handlers),
            input=dict(input or {}),
            steps=steps,
            created_at=now,
            updated_at=now,
        )


def references(value: Any) -> list[str]:
    """Every `${...}` path in a params value (nested dicts and lists included)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, str) and "${" in v:
            out.extend(m.group(1).strip() for m in _REF.finditer(v))
    return out


def _param_sets(step: StepSpec) -> list[tuple[str, dict[str, Any]]]:
    """The params of a step's action and of its compensation, each with how to name it."""
    sets = [("params", dict(step.params))]
    if step.compensation is not None:
        sets.append(("compensation params", dict(step.compensation.params)))
    return sets


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False  # JSON's true is not 1
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[name])


def payload_problems(schema: Mapping[str, Any], payload: Any, signal: str) -> list[Problem]:
    """What is wrong with a signal's payload for a wait step whose `payload:` is `schema` (as
    stored on the step), each located as `signal NAME` and the field; [] when it fits."""
    where = f"signal {signal}"
    if not isinstance(payload, Mapping):
        return [Problem("the payload must be a JSON object", where)]
    return _schema_problems(InputSchema.model_validate(schema), payload, where)


def _schema_problems(
    schema: InputSchema, input: Mapping[str, Any], where: str = "input"
) -> list[Problem]:
    problems = [
        Problem("missing required value", where, None, name)
        for name in schema.required
        if name not in input
    ]
    for name, value in input.items():
        prop = schema.properties.get(name)
        if prop is None:
            if not schema.additional_properties:
                known = ", ".join(schema.properties) or "none"
                problems.append(
                    Problem(f"not a declared input (declared: {known})", where, None, name)
                )
            continue
        types = (prop.type,) if isinstance(prop.type, str) else prop.type
        if types and not any(_is_type(value, t) for t in types):
            problems.append(
                Problem(f"must be {' or '.join(types)}, not {value!r:.60}", where, None, name)
            )
            continue
        if prop.enum is not None and value not in prop.enum:
            allowed = ", ".join(repr(v) for v in prop.enum)
            problems.append(Problem(f"must be one of {allowed}", where, None, name))
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and prop.minimum is not None and value < prop.minimum:
            problems.append(Problem(f"must be at least {prop.minimum:g}", where, None, name))
        if number and prop.maximum is not None and value > prop.maximum:
            problems.append(Problem(f"must be at most {prop.maximum:g}", where, None, name))
        if isinstance(value, str):
            if prop.min_length is not None and len(value) < prop.min_length:
                problems.append(
                    Problem(f"must be at least {prop.min_length} characters", where, None, name)
                )
            if prop.max_length is not None and len(value) > prop.max_length:
                problems.append(
                    Problem(f"must be at most {prop.max_length} characters", where, None, name)
                )
    return problems


# -- the rules a saga's table must satisfy as a whole, one named function per rule ----------


def _dependencies(spec: DefinitionSpec) -> dict[str, tuple[str, ...]]:
    """What each step waits for: its `depends_on`, or else the step written before it."""
    deps: dict[str, tuple[str, ...]] = {}
    prev: str | None = None
    for s in spec.steps:
        if s.depends_on is None:
            deps[s.name] = (prev,) if prev else ()
        else:
            deps[s.name] = s.depends_on
        prev = s.name
    return deps


def depends_on(name: str, target: str, deps: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether step `name` depends on `target`, directly or not (deps: name -> direct deps)."""
    seen: set[str] = set()
    todo = list(deps.get(name, ()))
    while todo:
        d = todo.pop()
        if d == target:
            return True
        if d not in seen:
            seen.add(d)
            todo.extend(deps.get(d, ()))
    return False


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
        return _dependencies(self.spec)

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
        for where, params in _param_sets(step):
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


def definition_from_data(
    data: Any, lines: LineMap | None = None, file: str | None = None
) -> WorkflowDefinition:
    lines = lines or LineMap(file)
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a workflow definition must be a mapping")])
    try:
        spec = DefinitionSpec.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(pydantic_problems(exc, lines)) from None
    problems = definition_problems(spec, lines)
    if problems:
        raise DefinitionError(problems)
    definition = WorkflowDefinition(spec, file, lines)
    if spec.step_lifecycle is not None:
        _validate_step_lifecycle(definition)
    return definition


def _validate_step_lifecycle(definition: WorkflowDefinition) -> None:
    """Load the saga's own step lifecycle now, so `validate` refuses what `run` would."""
    ref = definition.spec.step_lifecycle
    where = definition.lines.problem(("step_lifecycle",), "")
    path = Path(str(ref))
    if definition.file is not None and not path.is_absolute():
        path = Path(definition.file).parent / path
    if not path.is_file():
        raise DefinitionError(
            [
                Problem(
                    f"step_lifecycle {ref!r}: no such chart file ({path})",
                    where.file,
                    where.line,
                    where.field,
                )
            ]
        )
    chart = definition.step_chart()
    assert chart is not None
    # What the engine will check at run time (statesaga.vocabulary), so `validate` says it first.
    vocabulary.check(lifecycle_chart("step", chart), "step")


def load_definition(source: str | Path | Mapping[str, Any]) -> WorkflowDefinition:
    """Load a workflow definition from a YAML path or a dict; every problem is reported."""
    if isinstance(source, Mapping):
        return definition_from_data(source)
    data, lines = load_yaml_file(source)
    return definition_from_data(data, lines, str(source))


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow definition YAML format, generated from the models
    (published as statecharts/definition.schema.json; editors validate with it)."""
    schema = DefinitionSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://statesaga.dev/schema/definition.schema.json"
    schema["title"] = "statesaga workflow definition"
    return schema


def is_definition(data: Any) -> bool:
    """A YAML document is a workflow definition (not a chart) when it has `workflow:`."""
    return isinstance(data, Mapping) and "workflow" in data and "chart" not in data


_REF = re.compile(r"\$\{([^}]+)\}")


def resolve_params(
    value: Any, scope: Mapping[str, Any], missing_ok: set[str] | frozenset[str] = frozenset()
) -> Any:
    """Replace `${input.x}`, `${steps.NAME.key}` or `${result.key}` with values from scope.

    A string that is exactly one reference takes the referenced value (any JSON type);
    references inside longer strings are formatted as text. Unknown paths raise KeyError,
    except under a root named in `missing_ok`, which resolve to None.
    """
    if isinstance(value, dict):
        return {k: resolve_params(v, scope, missing_ok) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_params(v, scope, missing_ok) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return _lookup(whole.group(1), scope, missing_ok)
    return _REF.sub(lambda m: str(_lookup(m.group(1), scope, missing_ok)), value)


def _lookup(path: str, scope: Mapping[str, Any], missing_ok: Set[str] = frozenset()) -> Any:
    if path.strip().split(".")[0] in missing_ok:
        try:
            return _lookup(path, scope)
        except KeyError:
            return None
    cur: Any = scope
    for part in path.strip().split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(f"reference ${{{path}}}: {part!r} not found")
    return cur
