"""Shared helpers of the diagram tests: hostile inputs, a live workflow, the Mermaid checker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.charts.chart import load_chart
from statesaga.charts.lifecycles import lifecycle
from statesaga.cli import validate_file
from statesaga.context import StepContext
from statesaga.definitions.load import load_definition
from statesaga.diagram import Diagram, from_chart, from_definition, from_instance, from_loaded
from statesaga.engine import Engine
from statesaga.examples import DIR as EXAMPLES
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


def all_diagrams() -> list[tuple[str, Diagram]]:
    out = []
    for name in ("workflow", "step", "todo"):
        out.append((name, from_chart(lifecycle(name))))
        out.append((f"{name}-detail", from_chart(lifecycle(name), detail=True)))
    for p in sorted(Path(EXAMPLES).glob("*.yaml")):
        # examples hold workflow definitions and charts (agent_step extends `step`)
        out.append((p.stem, from_loaded(validate_file(str(p)))))
        out.append((f"{p.stem}-detail", from_loaded(validate_file(str(p)), detail=True)))
    wf = live_trip()
    out.append(("live-steps", from_instance(wf)))
    out.append(("live-workflow", from_instance(wf, view="workflow")))
    fresh = load_definition(Path(EXAMPLES) / "trip.yaml").instantiate({})
    out.append(("live-fresh", from_instance(fresh)))
    out.append(("hostile", from_chart(load_chart(hostile_chart()))))
    out.append(("hostile-detail", from_chart(load_chart(hostile_chart()), detail=True)))
    out.append(("nested", from_chart(load_chart(nested_chart()))))
    out.append(("nested-detail", from_chart(load_chart(nested_chart()), detail=True)))
    fan_out = {
        "workflow": "fan_out",
        "steps": [
            {"name": "left", "action": "a", "depends_on": [], "compensation": "undo"},
            {"name": "right", "action": "a", "depends_on": []},
            {"name": "join", "action": "a", "depends_on": ["left", "right"]},
        ],
    }
    out.append(("fan-out", from_definition(load_definition(fan_out))))
    hostile_nested = load_chart(hostile_nested_chart())
    out.append(("hostile-nested", from_chart(hostile_nested, detail=True)))
    return out


def agent_task_engine(tmp_path: Path) -> tuple[Engine, Any, Any]:
    """The agent_task example loaded on a real SQLite store: (engine, definition, the
    example's own research handler, for a test to wrap and register with replace=True)."""
    definition = load_definition(example_path("agent_task"))
    engine = Engine(
        SQLiteStore(tmp_path / "agent.db"),
        InlineQueue(),
        step_chart=definition.step_chart(),
        heartbeat_interval=0,
    )
    engine.load(definition)
    return engine, definition, engine.registry.get_handler("research_with_tools").func


def run_agent_task(tmp_path: Path) -> tuple[WorkflowState, WorkflowState, Any]:
    """Run the agent_task example on a real SQLite store; the research handler is the
    example's own, wrapped to take a copy of the stored workflow while its step waits for
    the tool. Returns (mid-run snapshot, finished workflow, definition)."""
    engine, definition, original = agent_task_engine(tmp_path)
    snapshots: list[WorkflowState] = []

    def research(ctx: StepContext) -> Any:
        ctx.progress("tool_called", "search: first")
        snapshots.append(engine.store.get(ctx.workflow_id))
        ctx.progress("tool_returned")
        return original(ctx)

    engine.registry.register_handler("research_with_tools", research, replace=True)
    wf = engine.run(definition, {"topic": "sagas"})
    assert wf.status is WorkflowStatus.COMPLETED
    return snapshots[0], wf, definition


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
    "fork": re.compile(rf"^{_PAD}state {_ID} <<fork>>$"),
    "composite": re.compile(rf"^{_PAD}state {_ID} \{{$"),
    "close": re.compile(rf"^{_PAD}\}}$"),
    "region": re.compile(rf"^{_PAD}--$"),
    "description": re.compile(rf"^{_PAD}{_ID} : (?P<label>[^\n]+)$"),
    "note": re.compile(rf"^{_PAD}note right of {_ID} : (?P<label>[^\n]+)$"),
    "classDef": re.compile(
        rf"^    classDef {_ID} fill:#[0-9a-f]{{6}},stroke:#[0-9a-f]{{6}},color:#[0-9a-f]{{6}}$"
    ),
    "class": re.compile(rf"^    class {_ID}(?:,{_ID})* {_ID}$"),
    "direction": re.compile(r"^    direction (?:LR|TB)$"),
}
_CSS = re.compile(
    r"^  themeCSS: \"(?:path\[data-id='edge\d+'\](?:,path\[data-id='edge\d+'\])*"
    r"\{[a-z0-9#:;. !-]+\} ?)+\"$"
)


def check_mermaid(text: str, diagram: Diagram) -> dict[str, list[str]]:
    """Structural check of a stateDiagram-v2: every line is one known statement, the counts
    match the diagram, and no label carries Mermaid syntax. Returns the labels by kind."""
    lines = text.splitlines()
    assert lines[0] == "---" and lines[1].startswith('title: "'), lines[:3]
    assert '"' not in lines[1][len('title: "') : -1]
    head = 2
    if lines[2] == "config:":  # our own CSS, nothing from a table
        assert _CSS.match(lines[3]), lines[3]
        head = 4
    assert lines[head] == "---" and lines[head + 1] == "stateDiagram-v2", lines[: head + 2]
    body = lines[head + 2 :]
    found: dict[str, list[str]] = {k: [] for k in MERMAID_LINES}
    for line in body:
        kinds = [k for k, rx in MERMAID_LINES.items() if rx.match(line)]
        assert kinds, f"not a Mermaid statement we emit: {line!r}"
        m = MERMAID_LINES[kinds[0]].match(line)
        assert m is not None
        label = m.groupdict().get("label") or ""
        parts = label.split("<br/>") if kinds[0] == "transition" else [label]
        parts = parts if label else []
        for part in parts:
            assert part.strip(), f"empty line in the label of {line!r}"
            for bad in ("-->", "%%", '"', "[", "]", "{", "}", "<", ">", ";", "#", "`"):
                # our own syntax inside transition labels: ` [guards]`
                if kinds[0] == "transition" and bad in "[]":
                    continue
                assert bad not in part, f"{bad!r} in label of {line!r}"
            if kinds[0] != "classDef":
                assert ":" not in part, line
        found[kinds[0]].append(label)
    # Composites are balanced and nested by indentation; one per compound node.
    depth = 0
    for line in body:
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
    # One arrow per pair of ends (edges between the same states share one, a line each), a
    # start per level (through a fork when a level starts in several states), an end per final.
    levels = [None, *(n.id for n in compound)]
    starts = [len(diagram.initial_in(level)) for level in levels]
    forks = sum(1 for n in starts if n > 1)
    assert len(found["fork"]) == forks
    assert len(found["transition"]) == (
        len({(e.src, e.dst) for e in diagram.edges})
        + sum(n + 1 if n > 1 else n for n in starts)
        + len(diagram.finals)
    )
    assert sum(len(t.split("<br/>")) for t in found["transition"] if t) >= len(
        [e for e in diagram.edges if e.label or e.taken]
    )
    assert len(found["note"]) == len(diagram.notes)
    return found


# -- the real Mermaid (tests/mermaid: mermaid-cli in a headless Chromium) ----------------------
MERMAID_DIR = Path(__file__).with_name("mermaid")
IN_CI = bool(os.environ.get("CI")) or bool(os.environ.get("STATESAGA_REQUIRE_MERMAID"))


def mermaid_missing() -> str | None:
    """Why the real Mermaid cannot run here (None when it can)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (MERMAID_DIR / "node_modules" / "@mermaid-js" / "mermaid-cli").is_dir():
        return "tests/mermaid/node_modules is missing (run `npm ci` in tests/mermaid)"
    browser = os.environ.get("PUPPETEER_EXECUTABLE_PATH", "/usr/bin/chromium")
    if not Path(browser).exists():
        return f"no Chromium at {browser} (apt-get install chromium)"
    return None


def require_mermaid() -> None:
    """Skip without the real Mermaid locally; in CI (CI=1) its absence is a failure."""
    import pytest

    why = mermaid_missing()
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"the real Mermaid must run in CI: {why}")
    pytest.skip(f"real Mermaid unavailable: {why}")


@dataclass
class Rendered:
    ok: bool
    error: str | None
    svg: str = ""

    def texts(self) -> list[str]:
        """Every piece of text a person sees in the picture (SVG <text> and the HTML labels
        Mermaid puts in <foreignObject>), one string per element."""
        root = ET.fromstring(self.svg)
        out = []
        for el in root.iter():
            tag = el.tag.rsplit("}", 1)[-1]
            if tag in ("text", "p", "span", "tspan") and el.text and el.text.strip():
                out.append(el.text.strip())
            if tag in ("p", "span"):
                out.extend(t.tail.strip() for t in el if t.tail and t.tail.strip())
        return out


def render_mermaid(texts: dict[str, str], out_dir: Path, png: bool = False) -> dict[str, Rendered]:
    """Render each Mermaid text with the real Mermaid in one browser; name -> outcome."""
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in texts.items():
        f = src / f"{name}.mmd"
        f.write_text(text, encoding="utf-8")
        files.append(str(f))
    proc = subprocess.run(
        [
            "node",
            str(MERMAID_DIR / "render.mjs"),
            *(["--png"] if png else []),
            str(out_dir),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
    )
    assert proc.returncode == 0, f"render.mjs failed: {proc.stderr[-2000:]}"
    out: dict[str, Rendered] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        svg = out_dir / f"{row['name']}.svg"
        out[row["name"]] = Rendered(
            row["ok"], row["error"], svg.read_text(encoding="utf-8") if row["ok"] else ""
        )
    return out
