"""The Renderer port and its lookup through the `statesaga.renderers` entry-point group.

The built-in renderers (mermaid, md, dot, svg) live in statesaga.adapters and are registered
in pyproject.toml exactly as a third-party one (say PlantUML) would be:

    [project.entry-points."statesaga.renderers"]
    plantuml = "my_package.plantuml:PlantUMLRenderer"
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import jinja2

from .. import plugins
from ..errors import AdapterError
from .model import Diagram

GROUP = "statesaga.renderers"

# Written into an SVG by the svg renderer: the digest of the DOT it was drawn from, so the
# freshness check of committed SVGs does not depend on the Graphviz version's layout.
SOURCE_MARK = "<!-- statesaga: rendered from DOT sha256="


def source_digest(dot_source: str) -> str:
    return hashlib.sha256(dot_source.encode("utf-8")).hexdigest()


@runtime_checkable
class Renderer(Protocol):
    """Turns a Diagram into a file's content: text, or bytes for binary formats."""

    name: str
    extension: str  # without the dot: "mmd", "dot", "svg", "md"

    def render(self, diagram: Diagram) -> str | bytes: ...


def get_renderer(name: str) -> Renderer:
    """The renderer registered as `name`; a class is instantiated without arguments.

    The plugin is checked against the port when it is loaded (not on first render), and a
    mismatch names the plugin and what it lacks.
    """
    obj = plugins.load(GROUP, name)
    renderer = obj() if isinstance(obj, type) else obj
    missing = [a for a in ("name", "extension", "render") if not hasattr(renderer, a)]
    if missing or not callable(getattr(renderer, "render", None)):
        raise AdapterError(
            f"{GROUP} plugin {name!r} is not a Renderer: missing {', '.join(missing) or 'render()'}"
        )
    if not isinstance(renderer, Renderer):  # pragma: no cover - hasattr checks above suffice
        raise AdapterError(f"{GROUP} plugin {name!r} is not a Renderer")
    return renderer


def renderer_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


@cache
def _loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader("statesaga.diagram", "templates")


def template_env(filters: Mapping[str, Callable[..., Any]]) -> jinja2.Environment:
    """A jinja2 environment over the shipped templates with the notation's escaping filters.

    Autoescape is off on purpose: HTML escaping is wrong for DOT and Mermaid, so every
    template escapes each value explicitly with the filter of its notation; StrictUndefined
    makes a typo in a template an error instead of an empty string.
    """
    env = jinja2.Environment(
        loader=_loader(),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    return env
