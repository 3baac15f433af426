"""Diagram renderers (the statesaga.renderers entry points): mermaid (and Markdown around it),
graphviz (DOT, and SVG through the dot program)."""
