"""Graphviz renderers: `dot` (DOT source) and `svg` (the DOT run through the real `dot -Tsvg`).

Escaping. Every id is a quoted DOT ID (`"` and `\\` escaped, so a name cannot end the string);
every label is a quoted escString in which `\\` is doubled (so `\\N`, `\\G`, `\\l` … stay text),
newlines become `\\n` line breaks and `&`, `<`, `>` become entities (Graphviz decodes them and
re-escapes them in the SVG, so a label cannot add an element to the picture).

Compound states. A compound state is a `subgraph "cluster_<path>"` holding its children and
its own start/end markers (the regions of a parallel state are dashed clusters inside it).
DOT edges join nodes, not clusters, so a transition to (or from) a compound state is drawn to
(from) the leaf it enters first, its initial child followed down, and clipped at the cluster's
border with `lhead` (`ltail`) under `compound=true`: it reads as an arrow to the composite box,
while the leaf it touches is the one the chart actually enters. Clipping is left out when the
other end lies inside the same cluster (Graphviz cannot clip an edge at a cluster holding both
ends), e.g. a transition from a compound state to one of its own children.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

from statesaga.diagram.model import (
    PALETTE,
    TAKEN_COLOUR,
    UNDO_COLOUR,
    Diagram,
    DiagramEdge,
    DiagramNode,
    order_text,
    text_colour,
)
from statesaga.diagram.render import SOURCE_MARK, source_digest, template_env
from statesaga.errors import AdapterError

DOT_MISSING = "graphviz `dot` not found; install graphviz (apt-get install -y graphviz)"


def dot_id(name: str) -> str:
    """A quoted DOT ID. In DOT's quoted strings only `\\"` is an escape, but a trailing
    backslash would still swallow the closing quote, so backslashes are doubled too."""
    text = str(name)
    if text.startswith(("%", "~")):
        # Graphviz keeps IDs starting with % for its anonymous objects (a node named "%3"
        # would be renamed); a leading ~ is escaped too so that the mapping stays one-to-one.
        text = "~" + text
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r", "\\r").replace("\n", "\\n")  # one statement per line
    return f'"{text}"'


def dot_label(text: str) -> str:
    """A quoted escString shown as the literal text (newlines kept as line breaks)."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace('"', '\\"')
    out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    out = "".join(ch if ch.isprintable() or ch == "\\" else " " for ch in out)
    return f'"{out}"'


def edge_text(e: DiagramEdge) -> str:
    """`trigger [guard, guard]` then `/ effects` on a second line; the path positions in front."""
    text: str = e.label
    if e.guards:
        text += f" [{', '.join(e.guards)}]"
    if e.effects:
        text += f"\n/ {', '.join(e.effects)}"
    if e.taken:
        text = f"{order_text(e.taken)} {text}"
    return text.strip()


def drawn_edges(diagram: Diagram) -> list[tuple[DiagramEdge, str]]:
    """The edges as drawn, each with its label. The loops of one state (of one kind) become
    one loop with a line each: Graphviz stacks the labels of several loops on one node on
    top of each other."""
    out: list[tuple[DiagramEdge, str]] = []
    loops: dict[tuple[str, str], int] = {}
    for e in diagram.edges:
        key = (e.src, e.kind)
        if e.src == e.dst and key in loops:
            first, text = out[loops[key]]
            merged = replace(first, taken=tuple(sorted({*first.taken, *e.taken})))
            out[loops[key]] = (merged, f"{text}\n{edge_text(e)}")
            continue
        if e.src == e.dst:
            loops[key] = len(out)
        out.append((e, edge_text(e)))
    return out


def node_text(n: DiagramNode) -> str:
    text: str = n.label
    if n.style == "pivot":
        text += "\n(pivot)"
    if n.status and n.status != n.label:
        text += f"\n{n.status}"
    return text


def _markers(diagram: Diagram) -> dict[str, object]:
    """Ids for the start/end markers and note boxes that cannot clash with any node id."""
    taken = {n.id for n in diagram.nodes}

    def fresh(base: str) -> str:
        name, i = base, 2
        while name in taken:
            name, i = f"{base}~{i}", i + 1
        taken.add(name)
        return name

    levels = [None, *(n.id for n in diagram.nodes if diagram.is_compound(n.id))]
    return {
        "start": {
            level: fresh(f"[*] start {diagram.initial_in(level)[0].id}")
            for level in levels
            if diagram.initial_in(level)
        },
        # A level that starts in several states at once (independent steps) starts at one
        # marker and forks, as the Mermaid drawing does.
        "fork": {
            level: fresh(f"[fork] {level or ''}")
            for level in levels
            if len(diagram.initial_in(level)) > 1
        },
        "end": {n.id: fresh(f"[*] end {n.id}") for n in diagram.finals},
        "note": [fresh(f"[note] {i} {note.target}") for i, note in enumerate(diagram.notes)],
    }


def _cluster(node_id: str) -> str:
    return f"cluster_{node_id}"


def edge_ends(diagram: Diagram, src: str, dst: str) -> dict[str, str | None]:
    """The nodes an edge between two diagram nodes joins, and the clusters it is clipped at."""
    tail, head = diagram.entry(src), diagram.entry(dst)
    return {
        "tail": tail,
        "head": head,
        "ltail": _cluster(src) if tail != src and src not in diagram.ancestors(dst) else None,
        "lhead": _cluster(dst) if head != dst and dst not in diagram.ancestors(src) else None,
    }


def entry_end(diagram: Diagram, node_id: str) -> dict[str, str | None]:
    """The node an arrow to `node_id` from outside it joins, and the cluster it is clipped at."""
    leaf = diagram.entry(node_id)
    return {"node": leaf, "cluster": _cluster(node_id) if leaf != node_id else None}


class DotRenderer:
    """Graphviz DOT source: point marker for the start, doublecircle markers for the ends,
    descriptions as tooltips."""

    name = "dot"
    extension = "dot"

    def __init__(self) -> None:
        self._template = template_env({"dotid": dot_id, "dotlabel": dot_label}).get_template(
            "dot.j2"
        )

    def render(self, diagram: Diagram) -> str:
        drawn = drawn_edges(diagram)
        return str(
            self._template.render(
                diagram=diagram,
                drawn=drawn,
                palette=PALETTE,
                text_colour=text_colour,
                undo_colour=UNDO_COLOUR,
                taken_colour=TAKEN_COLOUR,
                markers=_markers(diagram),
                edge_text=edge_text,
                node_text=node_text,
                ends=[edge_ends(diagram, e.src, e.dst) for e, _ in drawn],
                note_ends=[entry_end(diagram, n.target) for n in diagram.notes],
                ends_of=lambda node_id: entry_end(diagram, node_id),
                cluster=_cluster,
            )
        )


def run_dot(source: str, fmt: str = "svg", timeout: float = 60.0) -> str:
    """Run the real `dot -T<fmt>` on DOT source; AdapterError when missing or on a DOT error."""
    exe = shutil.which("dot")
    if exe is None:
        raise AdapterError(DOT_MISSING)
    try:
        proc = subprocess.run(
            [exe, f"-T{fmt}"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AdapterError(f"graphviz `dot` did not finish within {timeout:g}s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise AdapterError(f"graphviz `dot` rejected the diagram: {err}")
    return proc.stdout.decode("utf-8")


class SvgRenderer:
    """SVG drawn by the real `dot` binary from the DOT renderer's output.

    The SVG carries the sha256 of the DOT it was drawn from, so the freshness check of the
    committed pictures can tell whether an SVG is stale without depending on the Graphviz
    version (different versions lay out the same DOT with different coordinates).
    """

    name = "svg"
    extension = "svg"

    def __init__(self) -> None:
        self._dot = DotRenderer()

    def render(self, diagram: Diagram) -> str:
        source = self._dot.render(diagram)
        svg = run_dot(source, "svg")
        mark = f"{SOURCE_MARK}{source_digest(source)} -->\n"
        at = svg.find("<svg")
        return svg[:at] + mark + svg[at:] if at >= 0 else mark + svg
