"""The renderers, checked by running the real tools: `dot -Tsvg` must accept every DOT we make;
Mermaid output is checked statement by statement; hostile names cannot break or inject."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from statesaga.adapters.renderers.graphviz import (
    DOT_MISSING,
    dot_id,
    dot_label,
    drawn_edges,
    run_dot,
)
from statesaga.adapters.renderers.mermaid import mermaid_id, mermaid_ids, mermaid_label
from statesaga.charts.chart import load_chart
from statesaga.charts.lifecycles import lifecycle
from statesaga.definitions.load import load_definition
from statesaga.diagram import (
    Diagram,
    DiagramNode,
    from_chart,
    from_definition,
    from_instance,
)
from statesaga.diagram import get_renderer as renderer
from statesaga.errors import AdapterError
from statesaga.examples import DIR as EXAMPLES

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz `dot` not installed (apt-get install graphviz)"
)
SVG = "{http://www.w3.org/2000/svg}"


DIAGRAMS = H.all_diagrams()
IDS = [name for name, _ in DIAGRAMS]


@needs_dot
@pytest.mark.parametrize("diagram", [d for _, d in DIAGRAMS], ids=IDS)
def test_dot_accepts_every_diagram(diagram: Diagram) -> None:
    svg = renderer("svg").render(diagram)
    assert isinstance(svg, str)
    root = ET.fromstring(svg)  # well-formed XML
    nodes = [g for g in root.iter(f"{SVG}g") if "node" in (g.get("class") or "").split()]
    # every leaf node, plus one start marker per initial and one end marker per final, plus
    # notes; every compound node is a cluster
    leaves = [n for n in diagram.nodes if not diagram.is_compound(n.id)]
    levels = [None, *(n.id for n in diagram.nodes if diagram.is_compound(n.id))]
    starts = [len(diagram.initial_in(level)) for level in levels]
    forks = sum(1 for n in starts if n > 1)
    assert len(nodes) == (
        len(leaves) + sum(1 for n in starts if n) + forks + len(diagram.finals) + len(diagram.notes)
    )
    clusters = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"]
    assert len(clusters) == len(diagram.nodes) - len(leaves)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    # the loops of one state and kind share one edge (a line each); one start per level,
    # through a fork bar when a level starts in several states
    assert len(edges) == (
        len(drawn_edges(diagram))
        + sum(n + 1 if n > 1 else n for n in starts)
        + len(diagram.finals)
        + len(diagram.notes)
    )


@pytest.mark.parametrize("diagram", [d for _, d in DIAGRAMS], ids=IDS)
def test_mermaid_is_one_statement_per_line(diagram: Diagram) -> None:
    text = renderer("mermaid").render(diagram)
    assert isinstance(text, str)
    found = H.check_mermaid(text, diagram)
    ids = mermaid_ids(diagram)
    # `state "label" as id` exactly for odd names and for states showing a live status, so
    # the status is drawn under the name rather than instead of it
    odd = [n for n in diagram.nodes if ids[n.id] != n.label or n.status]
    assert len(found["state"]) == len(odd)


def test_mermaid_chart_shape() -> None:
    text = str(renderer("mermaid").render(from_chart(lifecycle("step"))))
    assert "    [*] --> PENDING\n" in text
    for final in ("FAILED", "COMPENSATED", "COMPENSATION_FAILED", "SKIPPED"):
        assert f"    {final} --> [*]\n" in text
    # two transitions between the same states: one arrow, a line each (no colliding labels)
    assert "    EXECUTING --> RETRYING : fail [can_retry]<br/>time_out [can_retry]\n" in text
    assert "    EXECUTING --> IN_DOUBT : fail [in_doubt]<br/>time_out\n" in text
    assert "    class COMPENSATION_FAILED,FAILED,IN_DOUBT failure\n" in text


def test_markdown_wraps_the_mermaid_text() -> None:
    d = from_definition(load_definition(Path(EXAMPLES) / "trip.yaml"))
    md = str(renderer("md").render(d))
    mermaid = str(renderer("mermaid").render(d))
    assert md.startswith("# trip_booking\n")
    assert f"```mermaid\n{mermaid}```\n" in md
    assert md.count("```") == 2


def test_hostile_mermaid_neither_breaks_nor_injects() -> None:
    d = from_chart(load_chart(H.hostile_chart()), detail=True)
    text = str(renderer("mermaid").render(d))
    H.check_mermaid(text, d)
    assert "<script" not in text and "%%" not in text
    body = "\n".join(text.splitlines()[3:]).replace("-->", "")  # after the front matter
    assert "<" not in body and ">" not in body and "--" not in body
    # every hostile name got its own id, and each shows up, neutralised, in a state line
    assert len(set(mermaid_ids(d).values())) == len(d.nodes)
    assert 'state "end" as s_end_' in text  # a keyword is never used as an id
    assert 'state "‹script›alert(1)‹/script›" as s_script_alert_1_script_' in text


@needs_dot
def test_hostile_dot_neither_breaks_nor_injects() -> None:
    d = from_chart(load_chart(H.hostile_chart()), detail=True)
    source = str(renderer("dot").render(d))
    # one statement per line: the hostile newlines are escapes, not line breaks
    assert len(source.splitlines()) == 5 + (
        len(d.nodes) + 2 * len(d.initial) + 2 * len(d.finals) + len(d.edges) + 2 * len(d.notes)
    )
    svg = run_dot(source)
    root = ET.fromstring(svg)
    tags = {el.tag.removeprefix(SVG) for el in root.iter()}
    assert tags <= {"svg", "g", "title", "polygon", "ellipse", "path", "text", "a", "polyline"}
    assert "<script" not in svg
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    # the label survives as text, each escString line of it (\N stays \N, not the node name)
    assert "<script>alert(1)</script>" in texts
    assert any("%% }<script>alert(2)</script>&amp; \\N #quot; `x` : ; |" in t for t in texts)
    titles = {
        g.findtext(f"{SVG}title")
        for g in root.iter(f"{SVG}g")
        if "node" in (g.get("class") or "").split()
    }
    # Node titles are the DOT IDs: backslashes doubled, a leading % escaped with ~ (Graphviz
    # reserves IDs starting with % for its anonymous objects), newlines as \n.
    ids = {dot_id(n)[1:-1].replace('\\"', '"') for n in H.HOSTILE_NAMES}
    assert ids <= titles, ids - titles
    assert "~%% comment" in titles and "back\\\\slash\\\\" in titles


def test_dot_escaping_units() -> None:
    assert dot_id('a"b\\') == '"a\\"b\\\\"'
    assert dot_id("a\nb") == '"a\\nb"'
    assert dot_id("%1") == '"~%1"' and dot_id("~%1") == '"~~%1"'
    assert dot_label("<b>&") == '"&lt;b&gt;&amp;"'
    assert dot_label("\\N") == '"\\\\N"'
    assert dot_label("1\n2") == '"1\\n2"'


def test_mermaid_escaping_units() -> None:
    assert mermaid_label('a"b --> c\n%% d: [e]; #f') == "a'b -› c % d꞉ (e), ♯f"
    assert mermaid_id("PENDING") == "PENDING"
    assert mermaid_id("in_progress") == "in_progress"
    assert re.fullmatch(r"s_a_b_[0-9a-f]{8}", mermaid_id("a-b"))
    assert mermaid_id("a-b") == mermaid_id("a-b")  # stable
    assert mermaid_id("a b") != mermaid_id("a-b")  # sanitised alike, still distinct
    assert mermaid_id("end").startswith("s_end_")


def test_mermaid_ids_unique_even_when_a_name_looks_like_a_mapped_id() -> None:
    mapped = mermaid_id("a-b")
    d = Diagram("t", (DiagramNode("a-b", "a-b"), DiagramNode(mapped, mapped)))
    ids = mermaid_ids(d)
    assert len(set(ids.values())) == 2


def test_svg_without_dot_is_a_clear_adapter_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("statesaga.adapters.renderers.graphviz.shutil.which", lambda name: None)
    with pytest.raises(AdapterError) as exc:
        renderer("svg").render(from_chart(lifecycle("todo")))
    assert str(exc.value) == DOT_MISSING
    assert "apt-get install -y graphviz" in DOT_MISSING


@needs_dot
def test_dot_error_is_reported() -> None:
    with pytest.raises(AdapterError, match="rejected the diagram"):
        run_dot("digraph { a -> ")


@needs_dot
def test_live_svg_shows_statuses_and_taken_path() -> None:
    svg = str(renderer("svg").render(from_instance(H.live_trip())))
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "COMPENSATED" in texts and "FAILED" in texts
    assert "3. undo cancel_hotel" in texts and "4. undo cancel_flight" in texts
    assert "COMPLETED" not in texts  # a compensated saga did not complete
