"""Named callables that tables may refer to: action handlers, effects and guards.

YAML never imports code by path: it can only name something registered here (by a decorator,
by `register_*`, or by a plugin's entry point in the `statesaga.effects` / `statesaga.guards`
groups). Collaborators are passed in; there is no module-level registry that tables reach.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from .errors import RegistryError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Effect:
    """A named callback a transition triggers: `func(ctx, **args)`.

    It runs before the save and may change only the working copy (`ctx.workflow`, `ctx.step`).
    Anything that reaches outside (enqueue a job, post a webhook) it returns as a callable,
    which the engine runs only once the save has succeeded: the save is the commit point.
    """

    name: str
    func: Callable[..., Callable[[], None] | None]


@dataclass(frozen=True)
class Handler:
    name: str
    func: Callable[..., Any]
    is_async: bool


_MARK = "__statesaga_handler__"


def handler(name: str | None = None) -> Callable[[F], F]:
    """Mark a function in a handlers module as the handler `name` (default: its own name).

    Marking changes nothing global: the functions of a module are registered when the module
    is given to an engine (`Engine(..., handlers=[module])`, `Registry.register_module`) or
    allowed by the operator (`--handlers`, see statesaga.security.allowlist). In a plain
    script, pass the script's functions or module:
    `Engine(store, queue, handlers=[sys.modules[__name__]])`.
    """

    def deco(func: F) -> F:
        setattr(func, _MARK, name or func.__name__)
        return func

    return deco


class Registry:
    """Handlers, compensations, effects and guards, by name."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._effects: dict[str, Effect] = {}
        self._guards: dict[str, Callable[..., bool]] = {}
        self._modules: set[str] = set()

    # -- handlers ------------------------------------------------------------------------
    def register_handler(
        self, name: str, func: Callable[..., Any], *, replace: bool = False
    ) -> None:
        if not callable(func):
            raise RegistryError(f"handler {name!r} is not callable: {func!r}")
        if name in self._handlers and not replace and self._handlers[name].func is not func:
            raise RegistryError(f"handler {name!r} is already registered")
        self._handlers[name] = Handler(name, func, inspect.iscoroutinefunction(func))

    def handler(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator: `@registry.handler()` registers a function under its own name."""

        def deco(func: F) -> F:
            self.register_handler(name or func.__name__, func)
            return func

        return deco

    def register_module(self, module: ModuleType | str) -> list[str]:
        """Register every handler a module marks with @handler or lists in `HANDLERS`."""
        mod = importlib.import_module(module) if isinstance(module, str) else module
        found: dict[str, Callable[..., Any]] = {}
        for obj in vars(mod).values():
            mark = getattr(obj, _MARK, None)
            if isinstance(mark, str) and callable(obj):
                found[mark] = obj
        listed = getattr(mod, "HANDLERS", {})
        if not isinstance(listed, dict):
            raise RegistryError(f"{mod.__name__}.HANDLERS must be a dict of name -> function")
        found.update(listed)
        for name, func in found.items():
            self.register_handler(name, func)
        self._modules.add(mod.__name__)
        return sorted(found)

    def register(self, *items: ModuleType | Callable[..., Any]) -> Registry:
        """Register handler modules and functions directly (the Python API's allow-list): a
        module's @handler functions, or a function under its @handler name (else its own)."""
        for item in items:
            if isinstance(item, ModuleType):
                self.register_module(item)
            else:
                mark = getattr(item, _MARK, None)
                self.register_handler(mark if isinstance(mark, str) else item.__name__, item)
        return self

    def has_module(self, name: str) -> bool:
        """Whether the handlers of the module `name` are registered."""
        return name in self._modules

    def get_handler(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise RegistryError(f"no handler registered as {name!r}; registered: {known}") from None

    def has_handler(self, name: str) -> bool:
        return name in self._handlers

    @property
    def handler_names(self) -> list[str]:
        return sorted(self._handlers)

    # -- effects -------------------------------------------------------------------------
    def register_effect(
        self, name: str, func: Callable[..., Any], *, replace: bool = False
    ) -> None:
        if name in self._effects and not replace:
            raise RegistryError(f"effect {name!r} is already registered")
        self._effects[name] = Effect(name, func)

    def effect(self, name: str | None = None) -> Callable[[F], F]:
        def deco(func: F) -> F:
            self.register_effect(name or func.__name__, func)
            return func

        return deco

    def get_effect(self, name: str) -> Effect:
        try:
            return self._effects[name]
        except KeyError:
            raise RegistryError(f"no effect registered as {name!r}") from None

    def has_effect(self, name: str) -> bool:
        return name in self._effects

    # -- guards --------------------------------------------------------------------------
    def register_guard(
        self, name: str, func: Callable[..., bool], *, replace: bool = False
    ) -> None:
        if name in self._guards and not replace:
            raise RegistryError(f"guard {name!r} is already registered")
        self._guards[name] = func

    def guard(self, name: str | None = None) -> Callable[[F], F]:
        def deco(func: F) -> F:
            self.register_guard(name or func.__name__, func)
            return func

        return deco

    def get_guard(self, name: str) -> Callable[..., bool]:
        try:
            return self._guards[name]
        except KeyError:
            raise RegistryError(f"no guard registered as {name!r}") from None

    def has_guard(self, name: str) -> bool:
        return name in self._guards

    def copy(self) -> Registry:
        new = Registry()
        new._handlers = dict(self._handlers)
        new._effects = dict(self._effects)
        new._guards = dict(self._guards)
        new._modules = set(self._modules)
        return new
