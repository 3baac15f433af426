"""Shared helpers of the diagram tests: hostile inputs, a live workflow, the Mermaid checker."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from statesaga.definition import load_definition
from statesaga.diagram import Diagram
from statesaga.examples import path as example_path
from statesaga.models import HistoryEntry, StepError, StepStatus, WorkflowState, WorkflowStatus

HOSTILE_NAMES = [
    'say "hi"',
    "x]-->y",
    "new\nline",
    "}",
    "<script>alert(1)</script>",
    "%% comment",
    "end",
    "back\\slash\\",
    "a: b; c",
    "[*]",
]
HOSTILE_LABEL = 'go"] --> X\n%% }<script>alert(2)</script>&amp; \\N #quot; `x` : ; |'


def hostile_chart() -> dict[str, Any]:
    """A valid chart whose every name and text is hostile to DOT, Mermaid and HTML."""
    names = HOSTILE_NAMES
    return {
        "chart": 'evil"chart}<script>',
        "description": HOSTILE_LABEL,
        "initial": names[0],
        "states": [
            {"name": n, "description": HOSTILE_LABEL, "final": i == len(names) - 1}
            for i, n in enumerate(names)
        ],
        "transitions": [
            {
                "trigger": HOSTILE_LABEL if i % 2 else f"t{i}",
                "source": names[i],
                "dest": names[i + 1],
                "guards": [HOSTILE_LABEL],
                "effects": ["persist", "x-->y"],
                "description": HOSTILE_LABEL,
            }
            for i in range(len(names) - 1)
        ],
    }


def at(minute: int) -> datetime:
    return datetime(2026, 2, 8, 12, minute, tzinfo=UTC)


def live_trip() -> WorkflowState:
    """The trip saga after reserve_car failed: flight and hotel compensated, in reverse."""
    wf = load_definition(example_path("trip")).instantiate({"origin": "AMS"})
    wf.status = WorkflowStatus.COMPENSATED
    status = {
        "reserve_flight": StepStatus.COMPENSATED,
        "reserve_hotel": StepStatus.COMPENSATED,
        "reserve_car": StepStatus.FAILED,
        "charge_payment": StepStatus.SKIPPED,
        "send_confirmation": StepStatus.SKIPPED,
    }
    for s in wf.steps:
        s.status = status[s.name]
    wf.step("reserve_car").error = StepError(type="Boom", message='no cars "left" -->')
    trail = [
        ("workflow", "start", "PENDING", "RUNNING", None),
        ("step", "dispatch", "QUEUED", "EXECUTING", "reserve_flight"),
        ("step", "succeed", "EXECUTING", "COMPLETED", "reserve_flight"),
        ("workflow", "advance", "RUNNING", "RUNNING", None),
        ("step", "dispatch", "QUEUED", "EXECUTING", "reserve_hotel"),
        ("step", "succeed", "EXECUTING", "COMPLETED", "reserve_hotel"),
        ("step", "dispatch", "QUEUED", "EXECUTING", "reserve_car"),
        ("step", "fail", "EXECUTING", "FAILED", "reserve_car"),
        ("workflow", "step_failed", "RUNNING", "COMPENSATING", None),
        ("step", "compensate", "COMPLETED", "COMPENSATING", "reserve_hotel"),
        ("step", "compensated", "COMPENSATING", "COMPENSATED", "reserve_hotel"),
        ("step", "compensate", "COMPLETED", "COMPENSATING", "reserve_flight"),
        ("step", "compensated", "COMPENSATING", "COMPENSATED", "reserve_flight"),
        ("workflow", "compensated", "COMPENSATING", "COMPENSATED", None),
    ]
    wf.history = [
        HistoryEntry(at=at(i), chart=c, trigger=t, source=s, dest=d, step=step)
        for i, (c, t, s, d, step) in enumerate(trail)
    ]
    return wf


def nested_chart() -> dict[str, Any]:
    """A compound state (with a final child that its parent's transition leaves from), a
    parallel state with two regions, transitions into and out of both, and a deep edge."""
    return {
        "chart": "nested",
        "initial": "IDLE",
        "states": [
            {"name": "IDLE"},
            {
                "name": "WORKING",
                "description": "busy",
                "initial": "PLANNING",
                "states": [
                    {"name": "PLANNING", "description": "thinking"},
                    {"name": "DOING"},
                    {"name": "DONE_HERE", "final": True},
                ],
            },
            {
                "name": "SYNCING",
                "parallel": True,
                "states": [
                    {
                        "name": "UPLOAD",
                        "initial": "SENDING",
                        "states": [{"name": "SENDING"}, {"name": "SENT", "final": True}],
                    },
                    {
                        "name": "INDEX",
                        "initial": "SCANNING",
                        "states": [{"name": "SCANNING"}, {"name": "INDEXED", "final": True}],
                    },
                ],
            },
            {"name": "FINISHED", "final": True, "tags": ["success"]},
        ],
        "transitions": [
            {"trigger": "start", "source": "IDLE", "dest": "WORKING"},
            {"trigger": "act", "source": "WORKING.PLANNING", "dest": "WORKING.DOING"},
            {"trigger": "finish", "source": "WORKING.DOING", "dest": "WORKING.DONE_HERE"},
            {"trigger": "sync", "source": "WORKING", "dest": "SYNCING"},
            {"trigger": "abort", "source": "WORKING.DOING", "dest": "IDLE"},
            {"trigger": "sent", "source": "SYNCING.UPLOAD.SENDING", "dest": "SYNCING.UPLOAD.SENT"},
            {
                "trigger": "indexed",
                "source": "SYNCING.INDEX.SCANNING",
                "dest": "SYNCING.INDEX.INDEXED",
            },
            {"trigger": "close", "source": "SYNCING", "dest": "FINISHED"},
        ],
    }


def hostile_nested_chart() -> dict[str, Any]:
    """hostile_chart's names as the children of a compound state with a hostile name, inside
    a parallel state whose regions have hostile names too."""
    names = HOSTILE_NAMES
    inner = hostile_chart()
    return {
        "chart": 'nested "evil" {chart}',
        "description": HOSTILE_LABEL,
        "initial": "x]-->y",
        "states": [
            {
                "name": "x]-->y",
                "description": HOSTILE_LABEL,
                "initial": names[0],
                "states": inner["states"],
            },
            {
                "name": "%% par {",
                "parallel": True,
                "description": HOSTILE_LABEL,
                "states": [
                    {
                        "name": n,
                        "initial": "<b>",
                        "states": [{"name": "<b>"}, {"name": "end", "final": True}],
                    }
                    for n in ("-- region }", "end")
                ],
            },
            {"name": "}", "final": True},
        ],
        "transitions": [
            *(
                {**t, "source": f"x]-->y.{t['source']}", "dest": f"x]-->y.{t['dest']}"}
                for t in inner["transitions"]
            ),
            {"trigger": HOSTILE_LABEL, "source": "x]-->y", "dest": "%% par {"},
            *(
                {"trigger": "t", "source": f"%% par {{.{r}.<b>", "dest": f"%% par {{.{r}.end"}
                for r in ("-- region }", "end")
            ),
            {"trigger": "out", "source": "%% par {", "dest": "}"},
        ],
    }


_ID = r"[A-Za-z0-9_]+"
_END = rf"(?:\[\*\]|{_ID})"
_PAD = r"(?:    )+"
MERMAID_LINES = {
    "transition": re.compile(rf"^{_PAD}{_END} --> {_END}(?: : (?P<label>[^\n]+))?$"),
    "state": re.compile(rf'^{_PAD}state "(?P<label>[^"\n]+)" as {_ID}$'),
    "composite": re.compile(rf"^{_PAD}state {_ID} \{{$"),
    "close": re.compile(rf"^{_PAD}\}}$"),
    "region": re.compile(rf"^{_PAD}--$"),
    "description": re.compile(rf"^{_PAD}{_ID} : (?P<label>[^\n]+)$"),
    "note": re.compile(rf"^{_PAD}note right of {_ID} : (?P<label>[^\n]+)$"),
    "classDef": re.compile(
        rf"^    classDef {_ID} fill:#[0-9a-f]{{6}},stroke:#[0-9a-f]{{6}},color:#000$"
    ),
    "class": re.compile(rf"^    class {_ID}(?:,{_ID})* {_ID}$"),
    "direction": re.compile(r"^    direction (?:LR|TB)$"),
}


def check_mermaid(text: str, diagram: Diagram) -> dict[str, list[str]]:
    """Structural check of a stateDiagram-v2: every line is one known statement, the counts
    match the diagram, and no label carries Mermaid syntax. Returns the labels by kind."""
    lines = text.splitlines()
    assert lines[0] == "---" and lines[1].startswith('title: "') and lines[2] == "---", lines[:3]
    assert '"' not in lines[1][len('title: "') : -1]
    assert lines[3] == "stateDiagram-v2"
    found: dict[str, list[str]] = {k: [] for k in MERMAID_LINES}
    for line in lines[4:]:
        kinds = [k for k, rx in MERMAID_LINES.items() if rx.match(line)]
        assert kinds, f"not a Mermaid statement we emit: {line!r}"
        m = MERMAID_LINES[kinds[0]].match(line)
        assert m is not None
        label = m.groupdict().get("label") or ""
        for bad in ("-->", "%%", '"', "[", "]", "{", "}", "<", ">", ";", "#", "`"):
            # our own syntax inside transition labels: ` [guards]`
            if kinds[0] == "transition" and bad in "[]":
                continue
            assert bad not in label, f"{bad!r} in label of {line!r}"
        if kinds[0] != "classDef":
            assert ":" not in label, line
        found[kinds[0]].append(label)
    # Composites are balanced and nested by indentation; one per compound node.
    depth = 0
    for line in lines[4:]:
        pad = (len(line) - len(line.lstrip(" "))) // 4
        if MERMAID_LINES["close"].match(line):
            depth -= 1
            assert pad == depth + 1, line
        else:
            assert pad == depth + 1, f"{line!r} at depth {depth}"
        if MERMAID_LINES["composite"].match(line):
            depth += 1
    assert depth == 0
    compound = [n for n in diagram.nodes if diagram.is_compound(n.id)]
    assert len(found["composite"]) == len(found["close"]) == len(compound)
    assert len(found["region"]) == sum(
        len(diagram.children(n.id)) - 1 for n in compound if n.parallel
    )
    # One line per intended statement: edges + a start per initial + an end per final.
    assert len(found["transition"]) == (
        len(diagram.edges) + len(diagram.initial) + len(diagram.finals)
    )
    assert len(found["note"]) == len(diagram.notes)
    return found
