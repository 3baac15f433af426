"""Diagrams drawn from the very objects that run: extract -> small IR -> renderer plugins.

from . import from_chart, get_renderer
text = get_renderer("mermaid").render(from_chart(lifecycle("step")))
"""

from __future__ import annotations

from .extract import (
    from_chart,
    from_definition,
    from_instance,
    from_loaded,
    from_path,
)
from .model import PALETTE, Diagram, DiagramEdge, DiagramNode, DiagramNote
from .render import GROUP, Renderer, get_renderer, renderer_names

__all__ = [
    "GROUP",
    "PALETTE",
    "Diagram",
    "DiagramEdge",
    "DiagramNode",
    "DiagramNote",
    "Renderer",
    "from_chart",
    "from_definition",
    "from_instance",
    "from_loaded",
    "from_path",
    "get_renderer",
    "renderer_names",
]
