"""Adapters are plugins found through entry-point groups, picked by URL scheme or name.

The built-in adapters are registered in pyproject.toml exactly as a third-party plugin
would be. Nothing is imported until asked for, so `import statesaga` stays light.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .charts.chart import Chart, load_chart
from .charts.lifecycles import lifecycle
from .errors import AdapterError, DefinitionError, Problem
from .ports import Queue, Store, store_exists

if TYPE_CHECKING:
    from .registry import Registry

GROUPS = (
    "statesaga.stores",
    "statesaga.queues",
    "statesaga.renderers",
    "statesaga.effects",
    "statesaga.guards",
    "statesaga.handlers",
)
DEFAULT_STORE = "sqlite:///statesaga.db"
DEFAULT_QUEUE = "inline://"

# What to install when a built-in adapter's dependency is missing.
_EXTRAS = {
    "redis": "rq",
    "redis+sentinel": "rq",
    "rq": "rq",
    "rq+sentinel": "rq",
    "arango": "arango",
}


@dataclass(frozen=True)
class PluginInfo:
    """One entry point as `statesaga plugins` shows it; `error` is set when it cannot load."""

    group: str
    name: str
    module: str
    version: str | None
    error: str | None = None
    value: str = ""
    dist: str | None = None
    # A built-in adapter that cannot load because its optional extra is not installed: not
    # a failure, just not installed (`pip install 'statesaga[<extra>]'`).
    missing_extra: str | None = None


#: The groups statesaga's own distribution registers built-in adapters in (pyproject.toml).
_BUILT_IN_GROUPS = frozenset(
    {"statesaga.stores", "statesaga.queues", "statesaga.handlers", "statesaga.renderers"}
)
#: Seconds a lookup that finds none of them waits for the metadata to be readable again.
_METADATA_GRACE = 2.0


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _entry_points_settled(group: str) -> dict[str, EntryPoint]:
    """`_entry_points`, but a group of built-ins found empty is looked up again for a moment:
    no entry point at all means the installed metadata was read mid-change (the environment
    being upgraded under a running worker, a build rewriting a checkout's egg-info), not that
    statesaga has no SQLite store (a CI run once failed with "installed: none")."""
    found = _entry_points(group)
    deadline = time.monotonic() + _METADATA_GRACE
    while not found and group in _BUILT_IN_GROUPS and time.monotonic() < deadline:
        time.sleep(0.05)
        importlib.invalidate_caches()
        found = _entry_points(group)
    return found


def load(group: str, name: str) -> Any:
    """Load the object registered as `name` in `group`, with an install hint when missing."""
    eps = _entry_points_settled(group)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise AdapterError(f"no {group} plugin named {name!r} (installed: {known})")
    try:
        return eps[name].load()
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        hint = f"; install it with: pip install 'statesaga[{extra}]'" if extra else ""
        raise AdapterError(f"{group} plugin {name!r} cannot be imported: {exc}{hint}") from None


def scheme(url: str) -> str:
    try:
        s = urlsplit(url).scheme
    except ValueError as exc:
        raise AdapterError(f"not an adapter URL: {exc}") from None
    if not s:
        raise AdapterError(f"not an adapter URL (expected scheme://...): {url!r}")
    return s


def open_store(url: str) -> Store:
    """Open the store a URL names (`sqlite:///x.db`, `memory://`, `redis://…`, `arango://…`)."""
    name = scheme(url)
    store: Store = _ported(_from_url(load("statesaga.stores", name), url, f"{name} store"), Store)
    return store


def only_read(store: Store) -> Store:
    """`store.read_only()`, before its first use (the port's default does nothing)."""
    store.read_only()
    return store


class NoStoreError(AdapterError):
    """Raised when a read-only command names a store that does not exist yet."""


def open_existing_store(url: str) -> Store:
    """Open a store for a command that only reads, read-only (`Store.read_only()`: it works
    on a full disk): a store that is not there yet (`Store.exists()`, false for an SQLite
    file not made yet) is refused instead of created."""
    store = open_store(url)
    only_read(store)
    if not store_exists(store):
        raise NoStoreError(
            f"no {scheme(url)} store at {store.location()}: nothing has been stored there yet"
        )
    return store


def open_queue(url: str) -> Queue:
    """Open the queue a URL names (`inline://`, `rq://host:6379/0?queue=statesaga`)."""
    name = scheme(url)
    queue: Queue = _ported(_from_url(load("statesaga.queues", name), url, f"{name} queue"), Queue)
    return queue


def _ported(adapter: Any, port: type[Any]) -> Any:
    """The adapter, if it offers every member of its port: the optional ones come with the
    port's defaults to an adapter that subclasses the port (`class MyStore(Store)`), so the
    core asks for them and never probes. One that lacks some is refused here, by name."""
    if isinstance(adapter, port):
        return adapter
    members = sorted(
        n
        for klass in port.__mro__
        if klass.__module__ == port.__module__
        for n in (*vars(klass), *klass.__dict__.get("__annotations__", {}))
        if not n.startswith("_")
    )
    missing = [n for n in dict.fromkeys(members) if n not in dir(adapter)]
    raise AdapterError(
        f"{type(adapter).__module__}.{type(adapter).__qualname__} does not implement the "
        f"{port.__name__} port (missing: {', '.join(missing)}); subclass "
        f"statesaga.ports.{port.__name__} to inherit the optional members' defaults"
    )


def _from_url(cls: Any, url: str, what: str) -> Any:
    """An adapter's from_url, with a malformed URL reported in one line (the adapter's own
    AdapterError, or what urllib or the client library raised while parsing)."""
    try:
        return cls.from_url(url)
    except (ValueError, TypeError) as exc:
        raise AdapterError(f"bad {what} URL: {exc}") from None


def installed() -> list[PluginInfo]:
    """Every plugin in every group, each loaded once to report failures instead of crashing."""
    out = []
    for group in GROUPS:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            version = ep.dist.version if ep.dist is not None else None
            error = extra = None
            dist = ep.dist.name if ep.dist is not None else None
            try:
                ep.load()
            except ImportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                if dist == "statesaga" and ep.name in _EXTRAS:
                    extra = _EXTRAS[ep.name]
            except Exception as exc:  # a broken plugin is reported, not fatal
                error = f"{type(exc).__name__}: {exc}"
            out.append(PluginInfo(group, ep.name, ep.module, version, error, ep.value, dist, extra))
    return out


# -- effects and guards -------------------------------------------------------------------
def _origin(ep: EntryPoint) -> str:
    dist = f" from {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"{ep.group} plugin {ep.name!r} ({ep.value}{dist})"


def _check_callable(ep: EntryPoint, func: Any, *, guard: bool) -> None:
    """Check the object against its role when it is registered, not when a transition fires."""
    if not callable(func):
        raise AdapterError(f"{_origin(ep)} is not callable: {func!r}")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # e.g. some C callables: nothing to check against
        return
    if guard:
        try:
            sig.bind(None)
        except TypeError:
            raise AdapterError(
                f"{_origin(ep)}: a guard is called as func(ctx) -> bool; its signature is {sig}"
            ) from None
        return
    takes_ctx = any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        for p in sig.parameters.values()
    )
    if not takes_ctx:
        raise AdapterError(
            f"{_origin(ep)}: an effect is called as func(ctx, **args); its signature is {sig}"
        )


def load_registry_plugins(registry: Registry) -> list[str]:
    """Register every effect and guard plugin (`statesaga.effects`, `statesaga.guards`).

    Called when an Engine is built, never on import, so a table can name a plugin's effect.
    A name already in the registry is kept (what the application registered wins over a
    plugin, and a plugin over a built-in, which are added afterwards). Returns the
    `group:name` of each plugin registered. Raises AdapterError naming the plugin and its
    group when one cannot be loaded, or when two distributions claim the same name.
    """
    registered: list[str] = []
    installed_eps = entry_points()  # one scan of the installed metadata for both groups
    for group, has, register, is_guard in (
        ("statesaga.effects", registry.has_effect, registry.register_effect, False),
        ("statesaga.guards", registry.has_guard, registry.register_guard, True),
    ):
        seen: dict[str, EntryPoint] = {}
        for ep in sorted(installed_eps.select(group=group), key=lambda e: e.name):
            if ep.name in seen and seen[ep.name].value != ep.value:
                raise AdapterError(
                    f"{group} name {ep.name!r} is claimed twice: by {_origin(seen[ep.name])} "
                    f"and by {_origin(ep)}; uninstall one of them"
                )
            seen[ep.name] = ep
            if has(ep.name):
                continue
            try:
                func = ep.load()
            except Exception as exc:  # any import-time failure of third-party code
                raise AdapterError(
                    f"{_origin(ep)} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            _check_callable(ep, func, guard=is_guard)
            register(ep.name, func)
            registered.append(f"{group}:{ep.name}")
    return registered


# -- user-supplied lifecycles -------------------------------------------------------------
#: A chart, or a YAML path or dict to load one from.
ChartSource = Chart | str | Path | Mapping[str, Any]


def lifecycle_chart(name: str, source: ChartSource | None) -> Chart:
    """The lifecycle chart the engine runs: the shipped one, or a user's copy of it.

    A user's copy (typically the shipped YAML with plugin effects or guards added to its
    transitions, or a chart that `extends` it with sub-states) must keep what the engine
    relies on: the same initial state, top-level states and final states (the models' status
    enums), and every trigger the shipped chart accepts from each state (the engine fires
    them); its name must be the shipped one unless it extends it. Transitions, guards and
    effects may be added. Raises DefinitionError listing every difference.
    """
    shipped = lifecycle(name)
    if source is None:
        return shipped
    chart = source if isinstance(source, Chart) else load_chart(source)
    if chart is shipped:
        return chart
    problems: list[str] = []
    if chart.name != shipped.name and chart.spec.extends != shipped.name:
        problems.append(f"the chart must be named {shipped.name!r}, not {chart.name!r}")
    if chart.initial != shipped.initial:
        problems.append(f"the initial state must be {shipped.initial!r}, not {chart.initial!r}")
    # Sub-states inside the shipped states are the user's own (the status stays a shipped
    # state; the engine keeps the path below it in `substate`).
    missing, extra = (
        set(shipped.states) - set(chart.top_states),
        set(chart.top_states) - set(shipped.states),
    )
    if missing:
        problems.append(f"states of the shipped {name} lifecycle are missing: {sorted(missing)}")
    if extra:
        problems.append(
            f"states unknown to the engine cannot be added: {sorted(extra)} "
            f"(the {name} status is one of the shipped states)"
        )
    if {st for st in chart.final_states if st in chart.top_states} != shipped.final_states:
        problems.append(
            f"the final states must be {sorted(shipped.final_states)}, "
            f"not {sorted(chart.final_states)}"
        )
    for state in shipped.states:
        if state not in chart.states:
            continue
        lost = set(shipped.allowed_triggers(state)) - set(chart.allowed_triggers(state))
        if lost:
            problems.append(
                f"state {state!r} no longer accepts {sorted(lost)}, which the engine fires"
            )
    if problems:
        raise DefinitionError(
            Problem(f"not a valid {name} lifecycle: {p}", chart.file) for p in problems
        )
    return chart
