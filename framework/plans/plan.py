"""A plan: an agent's todo list of tool calls, compiled into a saga definition at run time.

A plan (JSON or YAML) lists items, each a call of one tool with its arguments, what it
depends on and a title. `compile_plan` turns it into an ordinary WorkflowDefinition, which
passes the same validation and saga rules as a YAML definition, and more, all before anything
is stored:

- an unknown tool, or arguments its model refuses, is an error naming the item and the field;
- an item whose tool needs approval gets a wait step before it (`ITEM.approval`, signal
  `approve:ITEM`) whose request carries the tool, the canonical arguments and their hash; its
  arguments must be literal values, so that what a person approves is exactly what runs;
- the first irreversible item is the saga's pivot; every other irreversible item must come
  after it (one point of no return per plan);
- a reversible item after an irreversible one is flagged: once the point of no return may have
  applied nothing is undone, so its undo would never run (it is dropped, with a warning).

The compiled steps are stored in the workflow document with every version of the plan
(`WorkflowState.plan`); the lifecycle tables are the shipped ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._yaml import LineMap, Loc, load_yaml_file, pydantic_problems
from ..definitions.load import WorkflowDefinition, definition_from_data
from ..definitions.params import references
from ..definitions.spec import depends_on
from ..errors import DefinitionError, Problem, StateError
from ..models import (
    CompensationStrategy,
    PlanRecord,
    PlanVersion,
    PositiveSeconds,
    RetryPolicy,
    WorkflowState,
    utcnow,
)
from ..security.limits import json_problems, max_plan_items
from .tools import Reversibility, Tool, args_hash

#: The suffix of an item's approval step, and the prefix of the signal it waits for.
APPROVAL = "approval"
APPROVE = "approve:"
ITEM_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
#: Text shown to people (a plan's name, a title): printable, so that an agent cannot write
#: terminal escape sequences or NUL bytes into `plan show`, the logs or the dashboard.
TEXT = r"^[^\x00-\x1f\x7f]*$"
#: What the patterns above ask, in words (a refusal names the field and the value).
PATTERNS = {
    ITEM_ID: "an item id is letters, digits, _ and - (starting with a letter or _)",
    TEXT: "no control characters (newline, tab, escape, NUL)",
}
#: A day: how long an approval request waits for a person unless the plan says otherwise.
DEFAULT_APPROVAL_TIMEOUT = 86400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanItem(_Strict):
    """One call of a tool in a plan."""

    id: str = Field(
        min_length=1, pattern=ITEM_ID, description="unique in the plan (letters, digits, _ and -)"
    )
    tool: str = Field(min_length=1, description="the tool to call (see `statesaga tools`)")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="its arguments, checked against the tool's model; `${steps.ITEM.key}` "
        "reads an earlier item's result (not in an item that needs approval)",
    )
    depends_on: tuple[str, ...] | None = Field(
        None, description="absent: the item before it; [] : none (starts at once)"
    )
    title: str = Field(
        "",
        max_length=500,
        pattern=TEXT,
        description="what the item does, for people (the agent's todo)",
    )
    approval: bool = Field(
        False,
        strict=True,
        description="ask a person first even when the tool does not require it (an item "
        "cannot waive the approval a tool requires)",
    )

    @field_validator("depends_on", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v


class PlanSpec(_Strict):
    """The plan document."""

    plan: str = Field(
        min_length=1,
        max_length=200,
        pattern=TEXT,
        description="the plan's name (the workflow's name)",
    )
    description: str = Field("", max_length=5000, description="what the plan is for")
    strategy: CompensationStrategy = Field(
        CompensationStrategy.BACKWARD, description="how completed items are undone"
    )
    approval_timeout: PositiveSeconds | None = Field(
        DEFAULT_APPROVAL_TIMEOUT,
        description="seconds an approval request waits before the plan unwinds (null: forever)",
    )
    retry: RetryPolicy | None = Field(None, description="retry policy of every tool call")
    items: tuple[PlanItem, ...] = Field(min_length=1, description="the tool calls")


@dataclass
class CompiledPlan:
    """A plan made into a saga: its definition, and what the plan's checks flagged."""

    spec: PlanSpec
    definition: WorkflowDefinition
    warnings: list[Problem] = field(default_factory=list)
    #: item id -> its tool
    tools: dict[str, Tool] = field(default_factory=dict)

    def record(self, by: str | None, changes: Sequence[str] = (), number: int = 1) -> PlanVersion:
        return PlanVersion(
            number=number,
            at=utcnow(),
            by=by,
            spec=self.spec.model_dump(mode="json", exclude_defaults=True),
            changes=list(changes),
        )


def check_by(by: str | None, what: str) -> None:
    """Who acts is kept in the history and printed: a name, not control characters (an
    agent's MCP client or a script can pass any string)."""
    if by is None:
        return
    if len(by) > 100 or not re.fullmatch(TEXT, by):
        raise StateError(
            f"{what} names who acts with printable text up to 100 characters, not {by[:40]!r}"
        )


def approval_step(item_id: str) -> str:
    return f"{item_id}.{APPROVAL}"


def item_of(step_name: str) -> str:
    """The plan item a step belongs to (its own, or the one its approval gates)."""
    return step_name.split(".", 1)[0]


def needs_approval(item: PlanItem, tool: Tool) -> bool:
    return tool.approval or item.approval


def load_plan(source: str | Path | Mapping[str, Any]) -> tuple[PlanSpec, LineMap]:
    """Read a plan from a YAML or JSON file (or a dict); every problem is reported, located."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
        lines = LineMap("plan")  # a refusal reads `plan: [items.2.tool] ...`
    else:
        data, lines = load_yaml_file(source)
    return plan_from_data(data, lines), lines


def plan_from_data(data: Any, lines: LineMap) -> PlanSpec:
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a plan must be a mapping with `items`")])
    items = data.get("items")
    if isinstance(items, list | tuple) and len(items) > max_plan_items():
        raise DefinitionError([too_many(len(items), lines)])
    try:
        return PlanSpec.model_validate(data)
    except ValidationError as exc:
        problems = pydantic_problems(exc, lines, PATTERNS)
        # An invalid item also leaves `items` short of one: the item's own error says it.
        if any((p.field or "").startswith("items.") for p in problems):
            problems = [p for p in problems if p.field != "items"]
        raise DefinitionError(problems) from None


def too_many(count: int, lines: LineMap) -> Problem:
    return lines.problem(
        ("items",),
        f"{count} items: a plan has at most {max_plan_items()} (STATESAGA_MAX_PLAN_ITEMS)",
    )


class _ItemLines(LineMap):
    """Locates the compiled saga's problems in the plan: step i is (part of) item j, and a
    step's `params` are the item's `args`."""

    _FIELDS = {"name": "id", "params": "args", "action": "tool", "compensation": "tool"}

    def __init__(self, plan: LineMap, items: Sequence[PlanItem], steps: Sequence[str]) -> None:
        super().__init__(plan.file)
        self.plan = plan
        self.index = {item.id: i for i, item in enumerate(items)}
        self.steps = list(steps)

    def problem(self, loc: Loc, message: str) -> Problem:
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            name = self.steps[loc[1]]
            rest = tuple(self._FIELDS.get(p, p) if isinstance(p, str) else p for p in loc[2:])
            return self.plan.problem(("items", self.index[item_of(name)], *rest), message)
        return self.plan.problem(loc, message)


def compile_plan(
    spec: PlanSpec,
    tools: Mapping[str, Tool],
    lines: LineMap | None = None,
    version: int = 1,
) -> CompiledPlan:
    """Check a plan against the tools it may call and make it a saga definition. Raises
    DefinitionError listing every problem, each naming the item and field."""
    lines = lines or LineMap(None)
    items = spec.items
    if len(items) > max_plan_items():
        raise DefinitionError([too_many(len(items), lines)])
    seen: set[str] = set()
    problems: list[Problem] = []
    for i, item in enumerate(items):
        if item.id in seen:
            problems.append(lines.problem(("items", i, "id"), f"duplicate item id {item.id!r}"))
        seen.add(item.id)
    if problems:
        raise DefinitionError(problems)
    used: dict[str, Tool] = {}
    for i, item in enumerate(items):
        found = tools.get(item.tool)
        if found is None:
            known = ", ".join(sorted(tools)) or "none: give the tools module with --tools"
            problems.append(
                lines.problem(
                    ("items", i, "tool"),
                    f"item {item.id!r}: unknown tool {item.tool!r} (tools: {known})",
                )
            )
            continue
        used[item.id] = found
        # Args are stored, hashed and shown as JSON: a value JSON cannot carry (NaN, a
        # date object given from Python) is refused here, not after the plan is stored.
        not_json = [
            lines.problem(("items", i, "args"), f"item {item.id!r}: args.{why}")
            for why in json_problems(item.args)
        ]
        problems.extend(not_json or _args_problems(item, found, lines, ("items", i, "args")))
        if needs_approval(item, found) and references(item.args):
            problems.append(
                lines.problem(
                    ("items", i, "args"),
                    f"item {item.id!r} needs approval, so its args must be values, not "
                    "references: a person approves exactly what runs (revise the plan with "
                    "the values once the items before it have run)",
                )
            )
    if problems:
        raise DefinitionError(problems)
    deps = item_dependencies(items)
    pivot, order_problems = _pivot(items, used, deps, lines)
    if order_problems:
        raise DefinitionError(order_problems)
    warnings: list[Problem] = []
    steps: list[dict[str, Any]] = []
    past = _past(pivot, deps)
    for i, item in enumerate(items):
        t = used[item.id]
        after_pivot = item.id in past
        gated = needs_approval(item, t)
        if gated:
            steps.append(_approval_step(spec, item, t, deps[item.id], version))
        step: dict[str, Any] = {
            "name": item.id,
            "action": t.name,
            "params": dict(item.args),
            "description": item.title or t.description or t.name,
            "depends_on": [approval_step(item.id)] if gated else list(deps[item.id]),
        }
        if item.id == pivot:
            step["pivot"] = True
        if t.reversibility is Reversibility.REVERSIBLE:
            if after_pivot:
                warnings.append(
                    lines.problem(
                        ("items", i, "tool"),
                        f"item {item.id!r} is reversible but runs after the irreversible item "
                        f"{pivot!r}: past that point nothing is undone, so {t.undo} would never "
                        "run (it is retried forward instead)",
                    )
                )
            else:
                step["compensation"] = {"action": t.undo, "params": dict(item.args)}
        steps.append(step)
    retry = (spec.retry or RetryPolicy()).model_dump(exclude_defaults=True)
    retry["non_retryable"] = sorted(
        {*(spec.retry.non_retryable if spec.retry else ()), "ToolArgumentsError"}
    )
    data = {
        "workflow": spec.plan,
        "version": "plan",
        "description": spec.description,
        "handlers": sorted({t.module for t in used.values() if t.module}),
        "strategy": spec.strategy.value,
        "defaults": {"retry": retry},
        "steps": steps,
    }
    item_lines = _ItemLines(lines, items, [s["name"] for s in steps])
    definition = definition_from_data(data, item_lines, lines.file)
    return CompiledPlan(spec, definition, warnings, used)


def _past(pivot: str | None, deps: Mapping[str, tuple[str, ...]]) -> set[str]:
    """The items that depend on the pivot, directly or not: one walk of the graph (asking
    `depends_on` of each item is quadratic in a long plan)."""
    if pivot is None:
        return set()
    dependents: dict[str, list[str]] = {}
    for item, needs in deps.items():
        for d in needs:
            dependents.setdefault(d, []).append(item)
    found: set[str] = set()
    todo = list(dependents.get(pivot, ()))
    while todo:
        item = todo.pop()
        if item not in found:
            found.add(item)
            todo.extend(dependents.get(item, ()))
    return found


def _args_problems(item: PlanItem, t: Tool, lines: LineMap, at: Loc) -> list[Problem]:
    """The arguments against the tool's model. A top-level argument that is a reference
    (`${steps.search.price}`) is only known when the item runs: the rest are checked now, and
    the tool's handler checks them all when it is called."""
    referenced = {k for k, v in item.args.items() if references(v)}
    given = {k: v for k, v in item.args.items() if k not in referenced}
    extra = [
        lines.problem(
            (*at, k), f"item {item.id!r}: {t.name} args.{k}: not an argument of this tool"
        )
        for k in t.unknown(item.args)
    ]
    if extra:
        return extra
    try:
        t.check(given)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "missing" and loc and loc[0] in referenced:
                continue
            where = ".".join(str(p) for p in loc)
            msg = "missing" if err["type"] == "missing" else err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "not an argument of this tool"
            out.append(
                lines.problem((*at, *loc), f"item {item.id!r}: {t.name} args.{where}: {msg}")
            )
        return out
    return []


def item_dependencies(items: Sequence[PlanItem]) -> dict[str, tuple[str, ...]]:
    """What each item waits for: its `depends_on`, or the item before it when it names none."""
    deps: dict[str, tuple[str, ...]] = {}
    prev: str | None = None
    for item in items:
        deps[item.id] = (
            item.depends_on if item.depends_on is not None else ((prev,) if prev else ())
        )
        prev = item.id
    return deps


def _pivot(
    items: Sequence[PlanItem],
    used: Mapping[str, Tool],
    deps: Mapping[str, tuple[str, ...]],
    lines: LineMap,
) -> tuple[str | None, list[Problem]]:
    """The first irreversible item, which every other one must come after."""
    index = {item.id: i for i, item in enumerate(items)}
    if any(d not in index for ds in deps.values() for d in ds) or _cyclic(deps):
        return None, []  # unknown dependencies, a cycle: the saga's own rules report them
    last = [i.id for i in items if used[i.id].reversibility is Reversibility.IRREVERSIBLE]
    if not last:
        return None, []
    firsts = [p for p in last if all(o == p or depends_on(o, p, deps) for o in last)]
    if firsts:
        return firsts[0], []
    a, b = (
        next(
            (a, b)
            for a in last
            for b in last
            if a != b and not depends_on(a, b, deps) and not depends_on(b, a, deps)
        )
        if len(last) > 1
        else (last[0], last[0])
    )
    return None, [
        lines.problem(
            ("items", index[b], "depends_on"),
            f"irreversible items {a!r} and {b!r} may run in either order: a plan has one point "
            f"of no return, so make one depend on the other",
        )
    ]


def _cyclic(deps: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether the dependencies loop (Kahn's walk leaves an item out)."""
    waiting = {item: len(set(needs)) for item, needs in deps.items()}
    dependents: dict[str, list[str]] = {}
    for item, needs in deps.items():
        for d in set(needs):
            dependents.setdefault(d, []).append(item)
    ready = [item for item, n in waiting.items() if n == 0]
    done = 0
    while ready:
        item = ready.pop()
        done += 1
        for later in dependents.get(item, ()):
            waiting[later] -= 1
            if waiting[later] == 0:
                ready.append(later)
    return done < len(deps)


def _approval_step(
    spec: PlanSpec, item: PlanItem, t: Tool, deps: tuple[str, ...], version: int
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "name": approval_step(item.id),
        "kind": "wait",
        "signal": APPROVE + item.id,
        "description": f"a person approves {item.title or t.name}",
        "params": request(item.id, t.name, item.args, version),
        "payload": approval_payload(t.name, item.args),
        "depends_on": list(deps),
    }
    if spec.approval_timeout is not None:
        step["timeout"] = spec.approval_timeout
    return step


def request(item_id: str, tool_name: str, args: Mapping[str, Any], version: int) -> dict[str, Any]:
    """What an approval request shows a person: the exact call, and the hash that binds an
    approval to it."""
    return {
        "item": item_id,
        "tool": tool_name,
        "args": dict(args),
        "hash": args_hash(tool_name, args),
        "plan_version": version,
    }


def approval_payload(tool_name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The schema an approval's signal must fit: the hash of these very arguments, and who
    approves (so a plain `signal` cannot approve anything else either)."""
    return {
        "type": "object",
        "properties": {
            "hash": {"type": "string", "enum": [args_hash(tool_name, args)]},
            "by": {"type": "string", "minLength": 1},
            "note": {"type": "string"},
        },
        "required": ["hash", "by"],
        "additionalProperties": False,
    }


def items_from_tool_calls(
    calls: Sequence[Any], depends_on: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """A model's tool calls as plan items: OpenAI's Chat Completions `message.tool_calls`
    (`{id, type: function, function: {name, arguments}}`), Responses API `function_call`
    items (`{call_id, name, arguments}`), or Pydantic AI's `ToolCallPart` (or its dict:
    `{tool_name, args, tool_call_id}`); arguments a JSON text or an object. Calls made in one
    turn do not wait for each other (each depends on `depends_on`); the call id is the item
    id, so a later patch can name it. Nothing runs until the plan passes its checks."""
    out = []
    for call in calls:
        name, call_id, raw = _tool_call(call)
        args = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        out.append(
            {
                "id": re.sub(r"[^A-Za-z0-9_-]", "_", str(call_id or name)),
                "tool": name,
                "args": args,
                "depends_on": list(depends_on),
            }
        )
    return out


def _tool_call(call: Any) -> tuple[str, str | None, Any]:
    """(tool name, call id, arguments) of one tool call in any of the shapes above."""
    if not isinstance(call, Mapping):  # a Pydantic AI ToolCallPart
        return str(call.tool_name), getattr(call, "tool_call_id", None), call.args
    if "tool_name" in call:
        return str(call["tool_name"]), call.get("tool_call_id"), call.get("args")
    fn = call.get("function", call)
    return str(fn["name"]), call.get("id") or call.get("call_id"), fn.get("arguments", {})


def instantiate(compiled: CompiledPlan, session_id: str | None, by: str | None) -> WorkflowState:
    """A new PENDING workflow for a plan: its steps, version 1 of the plan, and each item
    linked to its todo (`SESSION` is the agent's session)."""
    wf = compiled.definition.instantiate({}, session_id)
    wf.plan = PlanRecord(versions=[compiled.record(by)])
    link_todos(wf, {t.name: t for t in compiled.tools.values()})
    return wf


def link_todos(wf: WorkflowState, tools: Mapping[str, Tool] | None = None) -> None:
    """Each item's step carries the id of the agent's todo it carries out (and, given the
    tools, whether its call has no effect)."""
    for step in wf.steps:
        if step.kind == "action":
            step.todo_id = f"{wf.id}:{step.name}"
            if tools is not None and step.action_type in tools:
                step.read_only = tools[step.action_type].reversibility is Reversibility.READ_ONLY


__all__ = [
    "APPROVAL",
    "APPROVE",
    "CompiledPlan",
    "PlanItem",
    "PlanSpec",
    "approval_payload",
    "approval_step",
    "compile_plan",
    "instantiate",
    "item_of",
    "items_from_tool_calls",
    "load_plan",
    "needs_approval",
    "plan_from_data",
    "request",
]
