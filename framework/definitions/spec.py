"""The YAML format of a workflow definition: pydantic models (published as
definition.schema.json), and what each step waits for."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..models import (
    CompensationStrategy,
    OnTimeout,
    PositiveSeconds,
    RetryPolicy,
    Seconds,
    StepKind,
)
from .inputs import InputSchema


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


def dependencies(spec: DefinitionSpec) -> dict[str, tuple[str, ...]]:
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


def definition_json_schema() -> dict[str, Any]:
    """The JSON Schema of the workflow definition YAML format, generated from the models
    (published as statecharts/definition.schema.json; editors validate with it)."""
    schema = DefinitionSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://statesaga.dev/schema/definition.schema.json"
    schema["title"] = "statesaga workflow definition"
    return schema
