"""Mermaid renderers: `mermaid` (a stateDiagram-v2 file, .mmd) and `md` (Markdown with a
```mermaid block, which GitHub draws).

Escaping. Ids are reduced to [A-Za-z0-9_] through a stable mapping (a name that is already a
safe identifier is kept; anything else becomes `s_<sanitised>_<hash>`), so the same table
always gives the same ids. Labels are single-line text with every character that Mermaid
treats as syntax replaced by a harmless look-alike: a hostile label can neither end a
statement, start a new one, open a comment nor reach the HTML Mermaid produces.

Composites. A compound state is drawn as `state ID { ... }` with its children, its own `[*]`
markers and the transitions between its children inside; the regions of a parallel state are
composites separated by `--`. A nested state's id is built from its path (`EXECUTING_CALLING_MODEL`,
labelled `CALLING_MODEL`), because Mermaid's ids are global to the diagram. Each transition is
written in the innermost composite holding both its ends. Mermaid cannot draw a transition
between states inside two different composites, so such a transition is still emitted with
its real ends at their common level, where Mermaid's layout may draw it loosely.

Live views. A state with a status is declared with its label first (`state "reserve_flight"
as reserve_flight`, then `reserve_flight : COMPENSATED`): a bare `id : text` line would make
the text the state's only label. Transitions between the same two states share one arrow (a
line of text each), and a level that starts in several states starts at a `<<fork>>` bar.
Mermaid has no dashed or thick transition of its own, so a `themeCSS` setting in the front
matter styles the compensations and the path taken, selecting Mermaid's edges by their
`data-id` (`edge<n>`, numbered in document order, notes included); the ↩ marks and the path
numbers say the same in a viewer that ignores it. tests/test_mermaid_real.py checks the
numbering against the real Mermaid.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from statesaga.diagram.model import (
    PALETTE,
    TAKEN_COLOUR,
    UNDO_COLOUR,
    Diagram,
    DiagramEdge,
    DiagramNote,
    order_text,
    text_colour,
)
from statesaga.diagram.render import template_env

_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Words the stateDiagram grammar reads as keywords when they appear where an id is expected.
_RESERVED = frozenset(
    {
        "as",
        "choice",
        "class",
        "classdef",
        "click",
        "default",
        "direction",
        "end",
        "fork",
        "join",
        "left",
        "note",
        "of",
        "over",
        "right",
        "state",
        "statediagram",
        "style",
    }
)
_LABEL_TABLE = str.maketrans(
    {
        "\r": " ",
        "\n": " ",
        "\t": " ",
        "\x0b": " ",
        "\x0c": " ",
        "\u2028": " ",
        "\u2029": " ",
        '"': "'",
        "`": "'",
        "[": "(",
        "]": ")",
        "{": "(",
        "}": ")",
        "<": "\u2039",
        ">": "\u203a",  # ‹ ›: no tag can be formed
        ":": "\ua789",  # ꞉ : a colon would start a description inside a transition line
        ";": ",",  # a statement separator in Mermaid
        "#": "\u266f",  # ♯ : `#quot;`-style entity codes are decoded by Mermaid
        "&": "\uff06",  # ＆ : no HTML entity either
        "\\": "/",  # the title sits in a YAML double-quoted string
        "|": "\u01c0",
    }
)


def mermaid_label(text: str) -> str:
    """One line of text that cannot contain Mermaid syntax (arrows, comments, quotes, …)."""
    out = str(text).translate(_LABEL_TABLE)
    out = "".join(ch if ch.isprintable() else " " for ch in out)
    out = re.sub(r"-{2,}", "-", out)  # no `-->` and no `--` arrow heads
    out = re.sub(r"%{2,}", "%", out)  # no `%%` comment
    out = re.sub(r"\s+", " ", out).strip()
    return out


def mermaid_id(name: str) -> str:
    """The Mermaid id of a name: kept when already safe, else sanitised plus a stable hash."""
    if _SAFE_ID.fullmatch(name) and name.lower() not in _RESERVED:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    core = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:40]
    return f"s_{core}_{digest}" if core else f"s_{digest}"


def mermaid_ids(diagram: Diagram) -> dict[str, str]:
    """Node id -> Mermaid id for one diagram, unique even if two sanitised names collide."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in diagram.nodes:
        # Top-level ids keep their historical form, so flat charts render exactly as before.
        mid = base = mermaid_id(n.id if n.parent is None else n.id.replace(".", "_"))
        i = 2
        while mid in used:
            mid, i = f"{base}_{i}", i + 1
        used.add(mid)
        out[n.id] = mid
    return out


UNDO_MARK = "\u21a9"  # ↩ marks a compensation even where the dashed line is not drawn


def edge_text(e: DiagramEdge) -> str:
    """`trigger [guard, guard] / effect, effect`, each part escaped on its own (the brackets and
    the slash are ours); a compensation starts with ↩."""
    text = mermaid_label(e.label)
    if e.guards:
        text += " [" + ", ".join(mermaid_label(g) for g in e.guards) + "]"
    if e.effects:
        text += " / " + ", ".join(mermaid_label(x) for x in e.effects)
    if e.kind == "compensation":
        text = f"{UNDO_MARK} {text}"
    return text.strip()


@dataclass
class Arrow:
    """One `A --> B : text` statement. Edges with the same ends are merged into one
    arrow, a line of text each: Mermaid draws two arrows between the same states on top of
    each other, labels and all. Each line starts with its own path positions."""

    src: str
    dst: str
    lines: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    undo: bool = False
    index: int = 0  # the n of Mermaid's `edge<n>` (arrows are numbered in document order)

    @property
    def taken(self) -> bool:
        return any(taken for _, taken in self.lines)

    @property
    def text(self) -> str:
        out = []
        for text, taken in self.lines:
            order = order_text(taken)
            line = f"{order} {text}".strip()
            if line:
                out.append(line)
        return "<br/>".join(out)


def _arrows(
    diagram: Diagram,
    ids: dict[str, str],
    forks: dict[str | None, str],
    notes: dict[str | None, list[DiagramNote]],
) -> dict[str | None, list[Arrow]]:
    """The arrows of each level (None: the top), in the order the template writes them: the
    start (through a fork bar when a level starts in several states at once), the edges, the
    ends. Then numbered the way Mermaid numbers edges, in document order: a composite's
    insides where it is declared (before its level's arrows), and every note counts too (its
    dotted connector is an edge)."""
    out: dict[str | None, list[Arrow]] = {}
    levels = [None, *(n.id for n in diagram.nodes if diagram.is_compound(n.id))]
    for level in levels:
        arrows = out.setdefault(level, [])
        starts = diagram.initial_in(level)
        if len(starts) > 1:
            arrows.append(Arrow("[*]", forks[level]))
            arrows.extend(Arrow(forks[level], ids[n.id]) for n in starts)
        else:
            arrows.extend(Arrow("[*]", ids[n.id]) for n in starts)
        merged: dict[tuple[str, str], Arrow] = {}
        for e in diagram.edges:
            if diagram.scope(e) != level:
                continue
            arrow = merged.get((e.src, e.dst))
            if arrow is None:
                arrow = merged[(e.src, e.dst)] = Arrow(ids[e.src], ids[e.dst], undo=True)
                arrows.append(arrow)
            arrow.lines.append((edge_text(e), e.taken))
            # Dashed when every line is a compensation (the ↩ marks tell them apart anyway).
            arrow.undo = arrow.undo and e.kind == "compensation"
        arrows.extend(Arrow(ids[n.id], "[*]") for n in diagram.finals_in(level))
    index = 0

    def number(level: str | None) -> None:
        nonlocal index
        for n in diagram.children(level):
            if diagram.is_compound(n.id):
                number(n.id)
        for arrow in out[level]:
            arrow.index, index = index, index + 1
        index += len(notes.get(level, []))

    number(None)
    return out


def theme_css(arrows: dict[str | None, list[Arrow]]) -> str:
    """CSS that dashes the compensations and draws the path taken thick, selecting Mermaid's
    edges by their `data-id` (edge<n>, in document order). A renderer that ignores the
    `themeCSS` setting still shows the ↩ marks and the numbers."""
    undo = [a.index for level in arrows.values() for a in level if a.undo]
    taken = [a.index for level in arrows.values() for a in level if a.taken]
    rules = []
    if undo:
        sel = ",".join(f"path[data-id='edge{i}']" for i in undo)
        rules.append(f"{sel}{{stroke-dasharray:6 4 !important;stroke:{UNDO_COLOUR} !important}}")
    if taken:
        sel = ",".join(f"path[data-id='edge{i}']" for i in taken)
        rules.append(f"{sel}{{stroke:{TAKEN_COLOUR} !important;stroke-width:2.5px !important}}")
    return " ".join(rules)


class MermaidRenderer:
    """A Mermaid `stateDiagram-v2`: `[*] -->` for initial (through a `<<fork>>` bar when a
    level starts in several states), `--> [*]` for finals (inside the composite of a nested
    state), composites for compound states. A node with a live status is declared with its
    label first (`state "reserve_flight" as reserve_flight`), so the status line is drawn
    under the name instead of replacing it."""

    name = "mermaid"
    extension = "mmd"

    def __init__(self) -> None:
        self._template = template_env({"mlabel": mermaid_label, "mid": mermaid_id}).get_template(
            "mermaid.j2"
        )

    def render(self, diagram: Diagram) -> str:
        ids = mermaid_ids(diagram)
        used = set(ids.values())
        forks: dict[str | None, str] = {}
        for level in [None, *(n.id for n in diagram.nodes if diagram.is_compound(n.id))]:
            if len(diagram.initial_in(level)) > 1:
                base = "fork_" + (ids[level] if level is not None else "start")
                fork, i = base, 2
                while fork in used:
                    fork, i = f"{base}_{i}", i + 1
                used.add(fork)
                forks[level] = fork
        classes: list[dict[str, Any]] = [
            {
                "name": mermaid_id(style),
                "fill": PALETTE.get(style, PALETTE["default"])[0],
                "stroke": PALETTE.get(style, PALETTE["default"])[1],
                "color": text_colour(style),
                "members": sorted(ids[m] for m in members),
            }
            for style, members in diagram.styles.items()
        ]
        notes: dict[str | None, list[DiagramNote]] = {}
        for note in diagram.notes:
            notes.setdefault(diagram.node(note.target).parent, []).append(note)
        arrows = _arrows(diagram, ids, forks, notes)
        return str(
            self._template.render(
                diagram=diagram,
                ids=ids,
                forks=forks,
                classes=[c for c in classes if c["members"]],
                arrows=arrows,
                css=theme_css(arrows),
                notes=notes,
            )
        )


def markdown_text(text: str) -> str:
    """Plain Markdown text on one line: no HTML, no code fences, no headings or links."""
    out = mermaid_label(text)
    return re.sub(r"([*~\[\]()!])", r"\\\1", out)


class MarkdownRenderer:
    """A Markdown file: the title, the description and a ```mermaid block (GitHub draws it)."""

    name = "md"
    extension = "md"

    def __init__(self) -> None:
        self._mermaid = MermaidRenderer()
        self._template = template_env({"mdtext": markdown_text}).get_template("markdown.j2")

    def render(self, diagram: Diagram) -> str:
        return str(self._template.render(diagram=diagram, mermaid=self._mermaid.render(diagram)))
