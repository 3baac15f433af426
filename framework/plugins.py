"""Adapters are plugins found through entry-point groups, picked by URL scheme or name.

The built-in adapters are registered in pyproject.toml exactly as a third-party plugin
would be. Nothing is imported until asked for, so `import statesaga` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from urllib.parse import urlsplit

from .errors import AdapterError
from .ports import Queue, Store

GROUPS = (
    "statesaga.stores",
    "statesaga.queues",
    "statesaga.renderers",
    "statesaga.effects",
    "statesaga.guards",
)
DEFAULT_STORE = "sqlite:///statesaga.db"
DEFAULT_QUEUE = "inline://"

# What to install when a built-in adapter's dependency is missing.
_EXTRAS = {"redis": "rq", "rq": "rq", "arango": "arango"}


@dataclass(frozen=True)
class PluginInfo:
    group: str
    name: str
    module: str
    version: str | None
    error: str | None = None


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def load(group: str, name: str) -> Any:
    """Load the object registered as `name` in `group`, with an install hint when missing."""
    eps = _entry_points(group)
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
    s = urlsplit(url).scheme
    if not s:
        raise AdapterError(f"not an adapter URL (expected scheme://...): {url!r}")
    return s


def open_store(url: str) -> Store:
    """Open the store a URL names (`sqlite:///x.db`, `memory://`, `redis://…`, `arango://…`)."""
    cls = load("statesaga.stores", scheme(url))
    store: Store = cls.from_url(url)
    return store


def open_queue(url: str) -> Queue:
    """Open the queue a URL names (`inline://`, `rq://host:6379/0?queue=statesaga`)."""
    cls = load("statesaga.queues", scheme(url))
    queue: Queue = cls.from_url(url)
    return queue


def installed() -> list[PluginInfo]:
    """Every plugin in every group, each loaded once to report failures instead of crashing."""
    out = []
    for group in GROUPS:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            version = ep.dist.version if ep.dist is not None else None
            error = None
            try:
                ep.load()
            except Exception as exc:  # a broken plugin is reported, not fatal
                error = f"{type(exc).__name__}: {exc}"
            out.append(PluginInfo(group, ep.name, ep.module, version, error))
    return out
