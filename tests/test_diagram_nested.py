"""Compound states and parallel regions in the IR, in both notations (real `dot`), the
agent_step example, and live diagrams of a step inside a nested lifecycle."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from statesaga.adapters.renderers.graphviz import run_dot
from statesaga.adapters.renderers.mermaid import mermaid_ids
from statesaga.charts.chart import load_chart
from statesaga.cli import validate_file
from statesaga.diagram import Diagram, from_chart, from_instance, from_loaded, get_renderer
from statesaga.examples import path as example_path
from statesaga.models import StepStatus

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz `dot` not installed (apt-get install graphviz)"
)
SVG = "{http://www.w3.org/2000/svg}"


def mermaid(d: Diagram) -> str:
    return str(get_renderer("mermaid").render(d))


def dot(d: Diagram) -> str:
    return str(get_renderer("dot").render(d))


def dot_clean(source: str) -> ET.Element:
    """Run the real `dot -Tsvg`; it must accept the source without a warning (a misplaced
    lhead/ltail is only a warning, and a silently unclipped edge)."""
    proc = subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    return ET.fromstring(proc.stdout.decode())


def block(text: str, opener: str) -> list[str]:
    """The lines inside the Mermaid composite opened by `opener` (without the braces)."""
    lines = text.splitlines()
    start = lines.index(opener)
    pad = len(opener) - len(opener.lstrip())
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == " " * pad + "}")
    return lines[start + 1 : end]


# -- the IR ---------------------------------------------------------------------------------


def test_ir_nests_children_under_their_compound_state() -> None:
    d = from_chart(load_chart(H.nested_chart()))
    assert [n.id for n in d.children("WORKING")] == [
        "WORKING.PLANNING",
        "WORKING.DOING",
        "WORKING.DONE_HERE",
    ]
    assert d.node("WORKING.DOING").label == "DOING"
    # initial/final are relative to the parent: markers are drawn inside the composite
    assert [n.id for n in d.initial_in(None)] == ["IDLE"]
    assert [n.id for n in d.initial_in("WORKING")] == ["WORKING.PLANNING"]
    assert [n.id for n in d.finals_in("WORKING")] == ["WORKING.DONE_HERE"]
    # every region of a parallel state is entered: none is marked initial
    assert d.node("SYNCING").parallel
    assert [n.kind for n in d.children("SYNCING")] == ["normal", "normal"]
    assert d.entry("SYNCING") == "SYNCING.UPLOAD.SENDING"
    assert d.entry("WORKING") == "WORKING.PLANNING"
    scopes = {(e.src, e.dst): d.scope(e) for e in d.edges}
    assert scopes[("WORKING.PLANNING", "WORKING.DOING")] == "WORKING"
    assert scopes[("SYNCING.UPLOAD.SENDING", "SYNCING.UPLOAD.SENT")] == "SYNCING.UPLOAD"
    assert scopes[("WORKING", "SYNCING")] is None
    assert scopes[("WORKING.DOING", "IDLE")] is None  # leaves the composite: written outside


def test_ir_rejects_a_node_in_an_unknown_parent() -> None:
    from statesaga.diagram import DiagramNode

    with pytest.raises(ValueError, match="lies in unknown node"):
        Diagram("t", (DiagramNode("a", "a", parent="nowhere"),))


# -- Mermaid --------------------------------------------------------------------------------


def test_mermaid_draws_composites_and_regions() -> None:
    d = from_chart(load_chart(H.nested_chart()))
    text = mermaid(d)
    H.check_mermaid(text, d)
    working = block(text, "    state WORKING {")
    assert working == [
        '        state "PLANNING" as WORKING_PLANNING',
        '        state "DOING" as WORKING_DOING',
        '        state "DONE_HERE" as WORKING_DONE_HERE',
        "        [*] --> WORKING_PLANNING",
        "        WORKING_PLANNING --> WORKING_DOING : act",
        "        WORKING_DOING --> WORKING_DONE_HERE : finish",
        "        WORKING_DONE_HERE --> [*]",
    ]
    syncing = block(text, "    state SYNCING {")
    # two regions, each a composite of its own, separated by Mermaid's `--`
    assert syncing.count("        --") == 1
    upload = block(text, "        state SYNCING_UPLOAD {")
    assert "            [*] --> SYNCING_UPLOAD_SENDING" in upload
    assert "            SYNCING_UPLOAD_SENT --> [*]" in upload
    # transitions to and from composites are drawn at the top level, as Mermaid expects
    assert "    IDLE --> WORKING : start\n" in text
    assert "    WORKING --> SYNCING : sync\n" in text
    assert "    SYNCING --> FINISHED : close\n" in text
    assert "    WORKING_DOING --> IDLE : abort\n" in text
    # no classDef inside composites (Mermaid cannot apply one there); top-level ones stay
    assert "    class FINISHED success\n" in text


def test_hostile_names_inside_composites_neither_break_nor_inject() -> None:
    d = from_chart(load_chart(H.hostile_nested_chart()), detail=True)
    text = mermaid(d)
    H.check_mermaid(text, d)
    assert "<script" not in text and "%%" not in text
    body = "\n".join(text.splitlines()[3:]).replace("-->", "")
    assert "<" not in body and ">" not in body
    # the only `--` left are the region separators, on lines of their own
    assert [ln for ln in body.splitlines() if "--" in ln] == ["        --"]
    assert body.count("{") == body.count("}") == sum(1 for n in d.nodes if d.is_compound(n.id))
    assert len(set(mermaid_ids(d).values())) == len(d.nodes)


@needs_dot
def test_hostile_names_inside_clusters_neither_break_nor_inject() -> None:
    d = from_chart(load_chart(H.hostile_nested_chart()), detail=True)
    root = dot_clean(dot(d))
    svg = ET.tostring(root, encoding="unicode")
    assert "<script" not in svg
    clusters = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"]
    labels = {t.text for g in clusters for t in g.iter(f"{SVG}text")}
    assert {"x]-->y", "%% par {", "-- region }", "end"} <= labels
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert texts.count("<script>alert(1)</script>") == 1  # the nested state, as text


# -- DOT ------------------------------------------------------------------------------------


@needs_dot
def test_dot_draws_clusters_and_clips_edges_at_them() -> None:
    d = from_chart(load_chart(H.nested_chart()))
    source = dot(d)
    assert "compound=true" in source.splitlines()[1]
    assert '    subgraph "cluster_WORKING" {' in source
    assert '        subgraph "cluster_SYNCING.UPLOAD" {' in source
    # to a composite: to its initial leaf, clipped at the composite's border
    assert (
        '"IDLE" -> "WORKING.PLANNING" [label="start", tooltip="start", lhead="cluster_WORKING"]'
        in source
    )
    # composite to composite: both ends clipped (the parallel state's entry is its first region's)
    assert (
        '"WORKING.PLANNING" -> "SYNCING.UPLOAD.SENDING" [label="sync", tooltip="sync", '
        'ltail="cluster_WORKING", lhead="cluster_SYNCING"]' in source
    )
    # a leaf-to-leaf edge is not clipped
    assert '"WORKING.DOING" -> "IDLE" [label="abort", tooltip="abort"]' in source
    root = dot_clean(source)
    clusters = {
        g.findtext(f"{SVG}title") for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"
    }
    assert clusters == {
        "cluster_WORKING",
        "cluster_SYNCING",
        "cluster_SYNCING.UPLOAD",
        "cluster_SYNCING.INDEX",
    }
    nodes = {
        g.findtext(f"{SVG}title")
        for g in root.iter(f"{SVG}g")
        if "node" in (g.get("class") or "").split()
    }
    assert "WORKING" not in nodes and "WORKING.PLANNING" in nodes


@needs_dot
def test_an_edge_from_a_composite_into_its_own_child_is_not_clipped() -> None:
    chart = H.nested_chart()
    chart["transitions"].append({"trigger": "replan", "source": "WORKING", "dest": "WORKING.DOING"})
    source = dot(from_chart(load_chart(chart)))
    assert '"WORKING.PLANNING" -> "WORKING.DOING" [label="replan", tooltip="replan"]' in source
    dot_clean(source)  # no "tail is inside head cluster" warning


# -- the agent_step example -----------------------------------------------------------------


def test_agent_step_example_in_both_notations() -> None:
    d = from_loaded(validate_file(str(example_path("agent_step"))))
    assert d.title == "agent_step"
    text = mermaid(d)
    H.check_mermaid(text, d)
    inside = block(text, "    state EXECUTING {")
    assert "        [*] --> EXECUTING_CALLING_MODEL" in inside
    assert "        EXECUTING_CALLING_MODEL --> EXECUTING_WAITING_FOR_TOOL : tool_called" in inside
    assert (
        "        EXECUTING_WAITING_FOR_TOOL --> EXECUTING_CALLING_MODEL : tool_returned" in inside
    )
    # the engine's transitions stay at the step lifecycle's level
    assert "    QUEUED --> EXECUTING : dispatch [workflow_running]\n" in text
    assert "    EXECUTING --> COMPLETED : succeed\n" in text
    if shutil.which("dot"):
        dot_clean(dot(d))


def test_committed_diagrams_include_the_nested_example() -> None:
    committed = Path(__file__).resolve().parents[1] / "diagrams"
    text = (committed / "agent_step.md").read_text(encoding="utf-8")
    assert "    state EXECUTING {\n" in text
    assert 'subgraph "cluster_EXECUTING"' in (committed / "agent_step.dot").read_text("utf-8")
    assert (committed / "agent_task.md").is_file()


# -- live diagrams --------------------------------------------------------------------------


run_agent_task = H.run_agent_task


def test_live_step_in_waiting_for_tool(tmp_path: Path) -> None:
    mid, _, definition = run_agent_task(tmp_path)
    step = mid.step("research")
    assert step.status is StepStatus.EXECUTING and step.substate == ["WAITING_FOR_TOOL"]

    # the step's own lifecycle: the active leaf is marked, its composite outlined
    d = from_instance(mid, definition, "step", step="research")
    leaf = d.node("EXECUTING.WAITING_FOR_TOOL")
    assert leaf.current and leaf.style == "current" and leaf.status == "current"
    assert d.node("EXECUTING").current and d.node("EXECUTING").style == "visited"
    assert [n.id for n in d.nodes if n.style == "current"] == ["EXECUTING.WAITING_FOR_TOOL"]
    taken = sorted((e.taken, e.label, e.src, e.dst) for e in d.edges if e.taken)
    assert taken == [
        ((1,), "schedule", "PENDING", "QUEUED"),
        ((2,), "dispatch", "QUEUED", "EXECUTING"),
        ((3,), "tool_called", "EXECUTING.CALLING_MODEL", "EXECUTING.WAITING_FOR_TOOL"),
    ]
    assert d.title.endswith("step research: EXECUTING.WAITING_FOR_TOOL")
    text = mermaid(d)
    H.check_mermaid(text, d)
    assert "        EXECUTING_WAITING_FOR_TOOL : current\n" in text
    assert (
        "        EXECUTING_CALLING_MODEL --> EXECUTING_WAITING_FOR_TOOL : 3. tool_called\n" in text
    )
    if shutil.which("dot"):
        source = dot(d)
        dot_clean(source)
        line = next(
            ln
            for ln in source.splitlines()
            if ln.strip().startswith('"EXECUTING.WAITING_FOR_TOOL" [')
        )
        assert 'fillcolor="#1b4f72"' in line and "penwidth=2.5" in line

    # the steps view shows the active sub-state path on the step
    steps = from_instance(mid, definition)
    assert steps.node("research").status == "EXECUTING.WAITING_FOR_TOOL"
    assert steps.node("research").current
    assert "research : EXECUTING.WAITING_FOR_TOOL" in mermaid(steps)


def test_live_step_after_the_run_shows_the_sub_state_path(tmp_path: Path) -> None:
    _, wf, definition = run_agent_task(tmp_path)
    d = from_instance(wf, definition, "step", step="research")
    assert [n.id for n in d.nodes if n.current] == ["COMPLETED"]
    order = {e.label: e.taken for e in d.edges if e.taken and e.src.startswith("EXECUTING.")}
    # first tool call, its return, then the handler's own two searches, then the summary:
    # each edge carries every position the path went through it
    assert order == {"tool_called": (3, 5, 7), "tool_returned": (4, 6, 8), "summarise": (9,)}
    succeed = next(e for e in d.edges if e.label == "succeed")
    assert succeed.taken == (10,) and succeed.src == "EXECUTING"
    visited = {n.id for n in d.nodes if n.style == "visited"}
    assert {
        "EXECUTING.CALLING_MODEL",
        "EXECUTING.WAITING_FOR_TOOL",
        "EXECUTING.SUMMARISING",
    } <= visited
    if shutil.which("dot"):
        svg = run_dot(dot(d))
        texts = [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]
        assert "9. summarise" in texts and "10. succeed" in texts
        assert "3, 5, 7. tool_called" in texts
    # the steps view of the finished run is unchanged by the nesting
    steps = from_instance(wf, definition)
    assert steps.node("research").status == "COMPLETED"
    # research, then draft_note, then the end: numbered 1, 2 (research started the saga)
    assert [(e.src, e.dst, e.taken) for e in steps.edges if e.kind == "forward"] == [
        ("research", "draft_note", (1,)),
        ("draft_note", "workflow:COMPLETED", (2,)),
    ]


def test_live_workflow_view_is_unchanged_for_a_flat_workflow_chart(tmp_path: Path) -> None:
    _, wf, _ = run_agent_task(tmp_path)
    d = from_instance(wf, view="workflow")
    assert [n.id for n in d.nodes if n.current] == ["COMPLETED"]
    assert all(n.parent is None for n in d.nodes)


def test_step_view_needs_a_step() -> None:
    wf = H.live_trip()
    with pytest.raises(ValueError, match="needs the name of a step"):
        from_instance(wf, view="step")
    # without a definition the shipped step lifecycle is drawn
    d = from_instance(wf, view="step", step="reserve_car")
    assert [n.id for n in d.nodes if n.current] == ["FAILED"]
    assert {e.taken for e in d.edges if e.taken} == {(1,), (2,)}
