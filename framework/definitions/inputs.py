"""A workflow's input schema (the JSON Schema subset a definition's `input:` and a wait step's
`payload:` are written in) and the check of a value against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import Problem

JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]


class InputProperty(BaseModel):
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


class InputSchema(BaseModel):
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
    return schema_problems(InputSchema.model_validate(schema), payload, where)


def schema_problems(
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
