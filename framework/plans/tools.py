"""Tools: handlers an agent may call, each with a pydantic argument model and a declared
reversibility, so the engine knows how each call is undone before any runs.

- `read_only`: no effect; never undone.
- `reversible`: undone by the handler it names (`undo=`), which is called with the same
  arguments and the call's result (`ctx.result`) when a later item of the plan fails.
- `irreversible`: cannot be undone; the point of no return of a plan, and by default it waits
  for a person's approval of its exact arguments before it runs.

A tool is a handler too (`@tool` marks it as one), so it is loaded the way every handler is:
from a module on the operator's allow-list (`--tools` / `--handlers`, $STATESAGA_HANDLERS, an
installed package's entry point). A plan names tools; it never makes anything be imported.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

from ..context import StepContext
from ..errors import RegistryError
from ..registry import handler

if TYPE_CHECKING:
    from ..registry import Registry

F = TypeVar("F", bound=Callable[..., Any])
_TOOL = "__statesaga_tool__"


class Reversibility(StrEnum):
    READ_ONLY = "read_only"
    REVERSIBLE = "reversible"
    IRREVERSIBLE = "irreversible"


class ToolArgumentsError(Exception):
    """Raised by a tool's handler when the arguments it is called with do not fit its model
    (not retried: another attempt would get the same arguments)."""


#: The shapes `Tool.definition` writes: OpenAI's function tools (Chat Completions), and the
#: `name` / `description` / `input_schema` of Anthropic's API and of MCP.
ToolShape = Literal["openai", "anthropic", "mcp", "statesaga"]


@dataclass(frozen=True)
class Tool:
    """What an agent's model is told of a tool, and what the engine needs to run and undo it."""

    name: str
    description: str
    args: type[BaseModel]
    reversibility: Reversibility
    #: The handler that undoes a reversible tool's call.
    undo: str | None
    #: Whether a person must approve the exact arguments before it runs.
    approval: bool
    #: The module that defines it (a plan's workflow names it in `handlers`, for workers).
    module: str = ""

    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments, as LLM APIs take it."""
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        if self.args.model_config.get("extra") != "allow":
            schema["additionalProperties"] = False  # see `unknown`
        return schema

    def unknown(self, args: Mapping[str, Any]) -> list[str]:
        """Arguments the model does not declare. Refused (unless the model allows extra
        keys): pydantic would drop them silently, and a misspelt argument of a payment must
        not quietly become its default."""
        if self.args.model_config.get("extra") == "allow":
            return []
        fields = set(self.args.model_fields)
        fields |= {f.alias for f in self.args.model_fields.values() if f.alias}
        return sorted(k for k in args if k not in fields)

    def summary(self) -> str:
        """The description with what an agent must know of its effect."""
        what = {
            Reversibility.READ_ONLY: "Read-only: no effect.",
            Reversibility.REVERSIBLE: f"Reversible: undone by {self.undo} if the plan fails.",
            Reversibility.IRREVERSIBLE: "Irreversible: cannot be undone.",
        }[self.reversibility]
        if self.approval:
            what += " Runs only once a person approves its exact arguments."
        return f"{self.description} ({what})" if self.description else what

    def definition(self, shape: ToolShape = "openai") -> dict[str, Any]:
        """The tool as an LLM API or MCP lists it."""
        if shape == "openai":
            return {
                "type": "function",
                "function": {
                    "name": self.name,
                    "description": self.summary(),
                    "parameters": self.parameters(),
                },
            }
        if shape in ("anthropic", "mcp"):
            key = "input_schema" if shape == "anthropic" else "inputSchema"
            return {"name": self.name, "description": self.summary(), key: self.parameters()}
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters(),
            "reversibility": self.reversibility.value,
            "undo": self.undo,
            "approval": self.approval,
        }

    def check(self, args: Any) -> BaseModel:
        """The arguments as the model reads them; raises pydantic's ValidationError."""
        return self.args.model_validate(args)


def tool(
    name: str | None = None,
    *,
    read_only: bool = False,
    undo: str | None = None,
    irreversible: bool = False,
    approval: bool | None = None,
    args: type[BaseModel] | None = None,
    description: str | None = None,
) -> Callable[[F], F]:
    """Mark a function as a tool (and so as a handler). Say exactly one of `read_only=True`,
    `undo="handler"` or `irreversible=True`. The function takes the argument model (its first
    parameter's annotation, or `args=`) and, optionally, the StepContext:

        class Book(BaseModel):
            hotel: str
            nights: int = Field(ge=1)

        @tool(undo="cancel_hotel")
        def book_hotel(args: Book, ctx: StepContext) -> dict[str, str]:
            "Book a hotel room."
            ...

    `approval` (default: only irreversible tools) makes each call wait for a person."""
    given = [read_only, undo is not None, irreversible]
    if sum(given) != 1:
        raise RegistryError(
            f"tool {name or '...'}: say how it is undone, exactly one of read_only=True, "
            "undo='handler' or irreversible=True"
        )
    kind = (
        Reversibility.READ_ONLY
        if read_only
        else Reversibility.REVERSIBLE
        if undo is not None
        else Reversibility.IRREVERSIBLE
    )

    def deco(func: F) -> F:
        tool_name = name or func.__name__
        model = args or _args_model(func, tool_name)
        takes_ctx = len(inspect.signature(func).parameters) >= 2
        spec = Tool(
            name=tool_name,
            description=description or _first_paragraph(func.__doc__),
            args=model,
            reversibility=kind,
            undo=undo,
            approval=kind is Reversibility.IRREVERSIBLE if approval is None else approval,
            module=func.__module__,
        )

        def parsed(ctx: StepContext) -> BaseModel:
            extra = spec.unknown(ctx.params)
            if extra:
                raise ToolArgumentsError(f"{tool_name}: not its arguments: {', '.join(extra)}")
            try:
                return model.model_validate(dict(ctx.params))
            except ValidationError as exc:
                raise ToolArgumentsError(f"{tool_name}: {_first(exc)}") from None

        if inspect.iscoroutinefunction(func):

            async def run_async(ctx: StepContext) -> Any:
                value = parsed(ctx)
                return await (func(value, ctx) if takes_ctx else func(value))

            wrapper: Callable[..., Any] = run_async
        else:

            def run(ctx: StepContext) -> Any:
                value = parsed(ctx)
                return func(value, ctx) if takes_ctx else func(value)

            wrapper = run
        wrapper.__name__ = func.__name__
        wrapper.__qualname__ = func.__qualname__
        wrapper.__doc__ = func.__doc__
        wrapper.__module__ = func.__module__
        setattr(wrapper, _TOOL, spec)
        return handler(tool_name)(wrapper)  # type: ignore[return-value]

    return deco


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def _args_model(func: Callable[..., Any], name: str) -> type[BaseModel]:
    params = list(inspect.signature(func).parameters)
    hints = get_type_hints(func) if params else {}
    model = hints.get(params[0]) if params else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistryError(
            f"tool {name}: its first parameter must be annotated with a pydantic model (the "
            "arguments), or pass args=Model"
        )
    return model


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "args"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {err['msg']}{more}"


def tool_of(func: Callable[..., Any]) -> Tool | None:
    """The Tool a handler function is, or None for a plain handler."""
    spec = getattr(func, _TOOL, None)
    return spec if isinstance(spec, Tool) else None


def tools_in(registry: Registry) -> dict[str, Tool]:
    """Every tool among a registry's handlers, by name, each checked: a reversible tool's undo
    must be a registered handler (a tool's undo may itself be a tool, whose model then checks
    the arguments it is called with)."""
    found: dict[str, Tool] = {}
    for name in registry.handler_names:
        spec = tool_of(registry.get_handler(name).func)
        if spec is None:
            continue
        if spec.undo is not None and not registry.has_handler(spec.undo):
            raise RegistryError(
                f"tool {name!r} is undone by {spec.undo!r}, which is not a registered handler "
                "(define it in the same module, marked @handler or @tool)"
            )
        found[name] = spec
    return found


def canonical(args: Mapping[str, Any]) -> str:
    """The one text of a set of arguments: JSON with sorted keys and no spaces, so the same
    arguments always give the same hash whoever wrote them and in whatever order."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def args_hash(tool_name: str, args: Mapping[str, Any]) -> str:
    """What an approval is bound to: the tool and its canonical arguments (sha256, hex)."""
    return hashlib.sha256(f"{tool_name}\n{canonical(args)}".encode()).hexdigest()


__all__ = [
    "Reversibility",
    "Tool",
    "ToolArgumentsError",
    "ToolShape",
    "args_hash",
    "canonical",
    "tool",
    "tool_of",
    "tools_in",
]
