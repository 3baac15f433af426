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
between states inside two different composites (nor apply a classDef within a composite), so
such a transition is still emitted with its real ends at their common level, where Mermaid's
layout may draw it loosely, and live states inside composites show their status as text.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from statesaga.diagram.model import PALETTE, Diagram, DiagramEdge, DiagramNote
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


def edge_text(e: DiagramEdge) -> str:
    """`trigger [guard, guard] / effect, effect`, each part escaped on its own (the brackets and
    the slash are ours)."""
    text = mermaid_label(e.label)
    if e.guards:
        text += " [" + ", ".join(mermaid_label(g) for g in e.guards) + "]"
    if e.effects:
        text += " / " + ", ".join(mermaid_label(x) for x in e.effects)
    if e.taken:
        text = f"{e.taken}. {text}".strip()
    return text.strip()


class MermaidRenderer:
    """A Mermaid `stateDiagram-v2`: `[*] -->` for initial, `--> [*]` for finals (inside the
    composite of a nested state), composites for compound states."""

    name = "mermaid"
    extension = "mmd"

    def __init__(self) -> None:
        self._template = template_env({"mlabel": mermaid_label, "mid": mermaid_id}).get_template(
            "mermaid.j2"
        )

    def render(self, diagram: Diagram) -> str:
        ids = mermaid_ids(diagram)
        # Mermaid applies no classDef to a composite or to a state inside one.
        plain = {n.id for n in diagram.children(None) if not diagram.is_compound(n.id)}
        classes: list[dict[str, Any]] = [
            {
                "name": mermaid_id(style),
                "fill": PALETTE.get(style, PALETTE["default"])[0],
                "stroke": PALETTE.get(style, PALETTE["default"])[1],
                "members": sorted(ids[m] for m in members if m in plain),
            }
            for style, members in diagram.styles.items()
        ]
        edges: dict[str | None, list[DiagramEdge]] = {}
        for e in diagram.edges:
            edges.setdefault(diagram.scope(e), []).append(e)
        notes: dict[str | None, list[DiagramNote]] = {}
        for note in diagram.notes:
            notes.setdefault(diagram.node(note.target).parent, []).append(note)
        return str(
            self._template.render(
                diagram=diagram,
                ids=ids,
                classes=[c for c in classes if c["members"]],
                edge_text=edge_text,
                edges=edges,
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
