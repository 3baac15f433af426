"""WorkflowDefinition: a user's saga written as a table of steps (YAML or a dict), validated
and loaded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .. import vocabulary
from .._yaml import LineMap, load_yaml_file, pydantic_problems
from ..charts.chart import Chart, load_chart
from ..errors import DefinitionError, InputError, Problem
from ..models import (
    CompensationAction,
    RetryPolicy,
    SagaStep,
    WorkflowState,
    new_id,
    utcnow,
)
from ..plugins import lifecycle_chart
from ..security.limits import (
    NOT_UNICODE,
    is_unicode,
    json_problems,
    json_size,
    max_input_bytes,
)
from .checks import definition_problems
from .inputs import schema_problems
from .params import lookup, param_sets, references
from .spec import DefinitionSpec, StepSpec, dependencies

if TYPE_CHECKING:
    from ..registry import Registry
    from ..security.allowlist import AllowList

# How a handler gets registered; a plain script's @handler functions are not until given.
_HOW = (
    " (register it: Engine(..., handlers=[module or function]) in Python, "
    "--handlers MODULE or STATESAGA_HANDLERS on the command line)"
)


class WorkflowDefinition:
    """A validated saga definition; `instantiate` makes a new WorkflowState from it."""

    def __init__(self, spec: DefinitionSpec, file: str | None, lines: LineMap) -> None:
        self.spec = spec
        self.file = file
        self.lines = lines
        self.name = spec.workflow
        self.version = spec.version
        self.steps = spec.steps
        self.dependencies: dict[str, tuple[str, ...]] = dependencies(spec)
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
            problems.extend(schema_problems(self.spec.input, input))
        missing: dict[str, list[str]] = {}  # input path -> who references it
        for step in self.steps:
            for where, params in param_sets(step):
                for ref in sorted(set(references(params))):
                    root, _, rest = ref.partition(".")
                    if root != "input" or not rest:
                        continue
                    try:
                        lookup(rest, input)
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


def definition_from_data(
    data: Any, lines: LineMap | None = None, file: str | None = None
) -> WorkflowDefinition:
    lines = lines or LineMap(file)
    if not isinstance(data, Mapping):
        raise DefinitionError([lines.problem((), "a workflow definition must be a mapping")])
    # A definition given as a dict may hold text read from bytes that are not UTF-8: its
    # params and names go into every document of the workflow, whose save would fail.
    problems = [lines.problem(loc, NOT_UNICODE) for loc in not_unicode(data)]
    if problems:
        raise DefinitionError(problems)
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


def not_unicode(data: Any) -> list[tuple[str | int, ...]]:
    """Where `data` (mappings and lists) holds a key or text that is not Unicode."""
    found: list[tuple[str | int, ...]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    seen: set[int] = set()  # a container met again (a dict holding itself) is not re-entered
    while stack:
        loc, v = stack.pop()
        if isinstance(v, Mapping | list | tuple):
            if id(v) in seen:
                continue
            seen.add(id(v))
        if isinstance(v, str):
            if not is_unicode(v):
                found.append(loc)
        elif isinstance(v, Mapping):
            for k, item in v.items():
                key = k if isinstance(k, str | int) else str(k)
                if isinstance(k, str) and not is_unicode(k):
                    # named with escapes: the report itself must print
                    found.append((*loc, k.encode("utf-8", "backslashreplace").decode()))
                else:
                    stack.append(((*loc, key), item))
        elif isinstance(v, list | tuple):
            stack.extend(((*loc, i), item) for i, item in enumerate(v))
    return sorted(found, key=str)


def is_definition(data: Any) -> bool:
    """A YAML document is a workflow definition (not a chart) when it has `workflow:`."""
    return isinstance(data, Mapping) and "workflow" in data and "chart" not in data
