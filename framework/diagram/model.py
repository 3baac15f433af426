"""The diagram IR: small frozen dataclasses that every renderer reads.

Extractors (extract.py) turn a Chart, a WorkflowDefinition or a live WorkflowState into a
Diagram; renderers (the `statesaga.renderers` plugins) turn a Diagram into text. Ids here are
the raw names from the tables (a nested state's id is its path, `EXECUTING.CALLING_MODEL`):
escaping is the renderer's job, because it differs per notation.

Nesting. A node with `parent` set lies inside that (compound) node; a compound node with
`parallel` has regions as children, all active at once. `kind="initial"` / `"final"` are
relative to the node's parent: the start and end markers are drawn inside the parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

NodeKind = Literal["initial", "final", "normal"]
EdgeKind = Literal["forward", "compensation"]
DiagramKind = Literal["chart", "definition", "instance"]

# Semantic styles -> (fill, stroke). Shared by every renderer so that Mermaid and DOT pictures
# of the same thing use the same colours; a renderer may ignore styles it cannot draw.
PALETTE: dict[str, tuple[str, str]] = {
    "default": ("#ffffff", "#34495e"),
    "success": ("#d4efdf", "#1e8449"),
    "failure": ("#fadbd8", "#c0392b"),
    "rolled_back": ("#fdebd0", "#ca6f1e"),
    "pivot": ("#e8daef", "#6c3483"),
    "waiting": ("#fdf2e9", "#af601a"),  # a step waiting for a signal or for time
    # Live views: the path taken stands out, what was never entered fades.
    "visited": ("#aed6f1", "#1f618d"),
    "current": ("#1b4f72", "#0b2739"),
    "unvisited": ("#fbfcfc", "#ccd1d1"),
    # Live step statuses (StepStatus values, lower-cased).
    "pending": ("#f2f3f4", "#7f8c8d"),
    "queued": ("#d6eaf8", "#2e86c1"),
    "executing": ("#aed6f1", "#1b4f72"),
    "retrying": ("#fcf3cf", "#b7950b"),
    "completed": ("#d4efdf", "#1e8449"),
    "failed": ("#fadbd8", "#c0392b"),
    "compensating": ("#fdebd0", "#ca6f1e"),
    "compensated": ("#fef5e7", "#ca6f1e"),
    "compensation_failed": ("#f5b7b1", "#922b21"),
    "skipped": ("#eaeded", "#95a5a6"),
}
# Text colours of the styles whose text is not black (white on dark fills, grey when faded).
TEXT: dict[str, str] = {"current": "#ffffff", "unvisited": "#99a3a4", "skipped": "#717d7e"}
# Edges: compensations (the saga unwinding) and the path a live instance took.
UNDO_COLOUR = "#ca6f1e"
TAKEN_COLOUR = "#2e86c1"


def text_colour(style: str) -> str:
    return TEXT.get(style, "#000000")


def order_text(taken: tuple[int, ...]) -> str:
    """Positions in the path as written before an edge's label: `3.`, `2, 5.`, `4–7.`
    (consecutive positions of a loop collapse into a range)."""
    if not taken:
        return ""
    runs: list[list[int]] = []
    for t in sorted(taken):
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    parts = [
        f"{r[0]}" if len(r) == 1 else f"{r[0]}, {r[1]}" if len(r) == 2 else f"{r[0]}\u2013{r[-1]}"
        for r in runs
    ]
    return ", ".join(parts) + "."


@dataclass(frozen=True)
class DiagramNode:
    """One box: a state of a chart, a step of a definition, or a workflow outcome."""

    id: str
    label: str
    kind: NodeKind = "normal"
    description: str = ""
    tags: tuple[str, ...] = ()
    style: str = "default"
    status: str | None = None  # live status of the step (instance diagrams only)
    current: bool = False  # where the instance is now (instance diagrams only)
    parent: str | None = None  # the compound node this one lies in
    parallel: bool = False  # a compound node whose children are parallel regions


@dataclass(frozen=True)
class DiagramEdge:
    """One arrow. `taken` (live views) lists its positions in the path the instance took:
    1, 2, 3, … over the transitions drawn, every traversal (a loop taken three times has three)."""

    src: str
    dst: str
    label: str = ""
    guards: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()
    kind: EdgeKind = "forward"
    description: str = ""
    taken: tuple[int, ...] = ()


@dataclass(frozen=True)
class DiagramNote:
    """Text attached to one node (Mermaid `note right of`, a DOT tooltip or note box)."""

    target: str
    text: str


@dataclass(frozen=True)
class Diagram:
    title: str
    nodes: tuple[DiagramNode, ...]
    edges: tuple[DiagramEdge, ...] = ()
    notes: tuple[DiagramNote, ...] = ()
    kind: DiagramKind = "chart"
    description: str = ""
    detail: bool = False
    direction: Literal["TB", "LR"] = "TB"
    _index: dict[str, DiagramNode] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate node ids in diagram {self.title!r}")
        known = set(ids)
        for e in self.edges:
            if e.src not in known or e.dst not in known:
                raise ValueError(f"edge {e.src!r} -> {e.dst!r} names an unknown node")
        for n in self.notes:
            if n.target not in known:
                raise ValueError(f"note on unknown node {n.target!r}")
        self._index.update({n.id: n for n in self.nodes})
        for node in self.nodes:
            seen = {node.id}
            up = node.parent
            while up is not None:
                if up not in known:
                    raise ValueError(f"node {node.id!r} lies in unknown node {up!r}")
                if up in seen:
                    raise ValueError(f"node {node.id!r} lies inside itself")
                seen.add(up)
                up = self._index[up].parent

    def node(self, node_id: str) -> DiagramNode:
        return self._index[node_id]

    @property
    def hierarchical(self) -> bool:
        return any(n.parent is not None for n in self.nodes)

    def children(self, node_id: str | None) -> tuple[DiagramNode, ...]:
        """The nodes directly inside `node_id` (None: the top level), in table order."""
        return tuple(n for n in self.nodes if n.parent == node_id)

    def is_compound(self, node_id: str) -> bool:
        return any(n.parent == node_id for n in self.nodes)

    def ancestors(self, node_id: str) -> tuple[str, ...]:
        """The node itself, then the compound nodes around it, outwards."""
        out = [node_id]
        while (up := self._index[out[-1]].parent) is not None:
            out.append(up)
        return tuple(out)

    def entry(self, node_id: str) -> str:
        """The leaf drawn as the way into a compound node: its initial child, recursively (the
        first region's for a parallel node). A leaf is its own entry."""
        kids = self.children(node_id)
        if not kids:
            return node_id
        first = next((k for k in kids if k.kind == "initial"), kids[0])
        return self.entry(first.id)

    def scope(self, edge: DiagramEdge) -> str | None:
        """The innermost compound node holding both ends of an edge (None: the top level); the
        edge is written inside it."""
        outer = set(self.ancestors(edge.dst)[1:])
        return next((a for a in self.ancestors(edge.src)[1:] if a in outer), None)

    def initial_in(self, node_id: str | None) -> tuple[DiagramNode, ...]:
        return tuple(n for n in self.children(node_id) if n.kind == "initial")

    def finals_in(self, node_id: str | None) -> tuple[DiagramNode, ...]:
        return tuple(n for n in self.children(node_id) if n.kind == "final")

    @property
    def initial(self) -> tuple[DiagramNode, ...]:
        return tuple(n for n in self.nodes if n.kind == "initial")

    @property
    def finals(self) -> tuple[DiagramNode, ...]:
        return tuple(n for n in self.nodes if n.kind == "final")

    @property
    def styles(self) -> dict[str, list[str]]:
        """style -> node ids using it (sorted, without `default`), for class statements."""
        out: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.style != "default":
                out.setdefault(n.style, []).append(n.id)
        return {k: sorted(v) for k, v in sorted(out.items())}
