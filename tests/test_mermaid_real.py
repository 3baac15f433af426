"""Every Mermaid text we produce, drawn by the real Mermaid (mermaid-cli in headless Chromium,
installed under tests/mermaid by `.ci/run`): accepted, and showing what a person must read.
Locally without Node or Chromium these tests skip; in CI (CI=1) they fail instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
import yaml
from statesaga import Engine
from statesaga.adapters.renderers.mermaid import UNDO_MARK
from statesaga.definitions.load import definition_from_data
from statesaga.diagram import Diagram, from_instance, get_renderer
from statesaga.diagram.regenerate import generate
from statesaga.examples import path as example_path
from statesaga.models import WorkflowState, WorkflowStatus
from statesaga.plugins import open_queue, open_store
from statesaga.registry import Registry

TRIP_INPUT = {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 10, "email": "a@b.c"}


def _trip(extra: dict[str, Any], broken_cancel: bool = False) -> tuple[WorkflowState, Any]:
    """Run the real trip saga in memory; `broken_cancel`: the hotel cannot be cancelled."""
    data = yaml.safe_load(example_path("trip").read_text(encoding="utf-8"))
    data.pop("handlers")
    definition = definition_from_data(data)
    registry = Registry()
    registry.register_module("statesaga.examples.trip_handlers")
    if broken_cancel:

        def cancel_hotel(ctx: Any) -> None:
            raise RuntimeError("hotel API down: cancellation refused")

        registry.register_handler("cancel_hotel", cancel_hotel, replace=True)
    engine = Engine(open_store("memory://"), open_queue("inline://"), registry)
    return engine.run(definition, {**TRIP_INPUT, **extra}), definition


def _fan_out() -> Diagram:
    """A definition whose first two steps start together (a fork), run for real."""
    data = {
        "workflow": "fan_out",
        "steps": [
            {"name": "left", "action": "ok", "depends_on": []},
            {"name": "right", "action": "ok", "depends_on": []},
            {"name": "join", "action": "ok", "depends_on": ["left", "right"]},
        ],
    }
    registry = Registry()
    registry.register_handler("ok", lambda ctx: {"ok": True})
    engine = Engine(open_store("memory://"), open_queue("inline://"), registry)
    wf = engine.run(definition_from_data(data), {})
    assert wf.status is WorkflowStatus.COMPLETED
    return from_instance(wf)


def _live() -> dict[str, tuple[Diagram, WorkflowState | None]]:
    out: dict[str, tuple[Diagram, WorkflowState | None]] = {}
    cases = {
        "compensated": _trip({"fail_at": "reserve_car", "flaky": "reserve_hotel"}),
        "failed-after-pivot": _trip({"fail_at": "send_confirmation"}),
        "compensation-failed": _trip({"fail_at": "reserve_car"}, broken_cancel=True),
        "completed": _trip({}),
    }
    for name, (wf, d) in cases.items():
        out[f"live-{name}-steps"] = (from_instance(wf, d), wf)
        out[f"live-{name}-workflow"] = (from_instance(wf, d, "workflow"), None)
        for s in wf.steps:
            out[f"live-{name}-step-{s.name}"] = (from_instance(wf, d, "step", step=s.name), None)
    out["live-fan-out"] = (_fan_out(), None)
    return out


def _every_diagram(tmp: Path) -> dict[str, tuple[Diagram | None, str, WorkflowState | None]]:
    """name -> (diagram, Mermaid text, the workflow when it is a live steps view)."""
    out: dict[str, tuple[Diagram | None, str, WorkflowState | None]] = {}
    mermaid = get_renderer("mermaid")
    for name, d in H.all_diagrams():
        out[f"ir-{name}"] = (d, str(mermaid.render(d)), None)
    for name, (d, wf) in _live().items():
        out[name] = (d, str(mermaid.render(d)), wf)
    # the committed pictures (diagrams/*.md): the block GitHub draws
    generate(tmp / "committed", ("md",))
    for md in sorted((tmp / "committed").glob("*.md")):
        blocks = re.findall(r"```mermaid\n(.*?)```", md.read_text(encoding="utf-8"), re.S)
        for i, block in enumerate(blocks):
            out[f"md-{md.stem}-{i}"] = (None, block, None)
    return out


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    H.require_mermaid()
    tmp = tmp_path_factory.mktemp("mermaid")
    diagrams = _every_diagram(tmp)
    rendered = H.render_mermaid({n: text for n, (_, text, _) in diagrams.items()}, tmp / "out")
    return {"diagrams": diagrams, "rendered": rendered}


def test_the_real_mermaid_accepts_every_diagram(drawn: dict[str, Any]) -> None:
    diagrams, rendered = drawn["diagrams"], drawn["rendered"]
    assert set(rendered) == set(diagrams)
    assert len(diagrams) > 50
    rejected = {n: r.error for n, r in rendered.items() if not r.ok}
    assert not rejected, rejected


def test_live_views_name_every_step_and_its_status(drawn: dict[str, Any]) -> None:
    checked = 0
    for name, (_, _, wf) in drawn["diagrams"].items():
        if wf is None:
            continue
        texts = drawn["rendered"][name].texts()
        for s in wf.steps:
            # the name and, under it, the status: not the status instead of the name
            assert s.name in texts, f"{name}: step {s.name} not drawn ({texts})"
            at = texts.index(s.name)
            assert texts[at + 1].startswith(s.status.value), (name, s.name, texts[at : at + 2])
        checked += 1
    assert checked == 4


def test_a_halted_saga_shows_its_failed_end_and_reason(drawn: dict[str, Any]) -> None:
    texts = " ".join(drawn["rendered"]["live-failed-after-pivot-steps"].texts())
    assert "FAILED (halted)" in texts
    assert "once the pivot charge_payment may have applied" in texts
    assert "COMPLETED" in texts  # the steps before it ...
    assert UNDO_MARK not in texts  # ... but no way back is drawn: nothing was undone
    texts = " ".join(drawn["rendered"]["live-compensation-failed-steps"].texts())
    assert "compensation of reserve_hotel failed" in texts and "COMPLETED, not undone" in texts
    step = " ".join(drawn["rendered"]["live-compensation-failed-step-reserve_hotel"].texts())
    assert "undo failed꞉ RuntimeError꞉ hotel API down" in step  # Mermaid-safe colons
    texts = drawn["rendered"]["live-compensated-steps"].texts()
    assert "COMPLETED" not in texts and "COMPENSATED" in texts


def _css_edges(text: str, which: str) -> set[str]:
    css = re.search(r'themeCSS: "(.*)"', text)
    if css is None:
        return set()
    rules = dict(re.findall(r"([^{} ]+)\{([^}]*)\}", css.group(1)))
    return {i for sel, body in rules.items() if which in body for i in re.findall(r"edge\d+", sel)}


def _lines(el: Any) -> list[str]:
    """The text of an element as the lines a person sees (a new line at each <br>)."""
    lines = [""]

    def walk(node: Any) -> None:
        lines[-1] += node.text or ""
        for child in node:
            if child.tag.rsplit("}", 1)[-1] == "br":
                lines.append("")
            else:
                walk(child)
            lines[-1] += child.tail or ""

    walk(el)
    return [line.strip() for line in lines if line.strip()]


def _edge_labels(svg: str) -> dict[str, list[str]]:
    """Mermaid's edge id (edge<n>) -> the lines of its label."""
    import xml.etree.ElementTree as ET

    return {
        g.get("data-id", ""): _lines(g)
        for g in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}g")
        if g.get("class") == "label" and g.get("data-id")
    }


def test_dashed_and_taken_edges_are_the_right_ones(drawn: dict[str, Any]) -> None:
    """The themeCSS selects edges by Mermaid's own numbering: each dashed edge must be a
    compensation (its label starts with ↩), each thick one carry a path position."""
    seen = 0
    for name, (_, text, _) in drawn["diagrams"].items():
        rendered = drawn["rendered"][name]
        labels = _edge_labels(rendered.svg)
        for edge in _css_edges(text, "dasharray"):
            seen += 1
            assert labels.get(edge), (name, edge, sorted(labels))
            assert all(
                re.match(rf"(?:[0-9, \u2013]+\. )?{UNDO_MARK} ", line) for line in labels[edge]
            ), (name, edge, labels[edge])
        for edge in _css_edges(text, "stroke-width"):
            assert any(re.match(r"\d", line) for line in labels[edge]), (name, labels[edge])
        dashed = rendered.svg.count("stroke-dasharray:6 4 !important")
        assert dashed <= 1  # one rule, scoped to the picture
    assert seen > 20


def test_the_active_nested_leaf_is_coloured(drawn: dict[str, Any], tmp_path: Path) -> None:
    mid, _, definition = H.run_agent_task(tmp_path)
    d = from_instance(mid, definition, "step", step="research")
    text = str(get_renderer("mermaid").render(d))
    out = H.render_mermaid({"nested": text}, tmp_path / "out")["nested"]
    assert out.ok, out.error
    leaf = re.search(
        r'<g class="node ([^"]*)"[^>]*id="[^"]*-state-EXECUTING_WAITING_FOR_TOOL', out.svg
    )
    assert leaf is not None and "current" in leaf.group(1).split()


def test_a_fork_starts_independent_steps(drawn: dict[str, Any]) -> None:
    text = drawn["diagrams"]["live-fan-out"][1]
    assert "state fork_start <<fork>>" in text and "[*] --> fork_start" in text
    assert text.count("[*] -->") == 1
    assert drawn["rendered"]["live-fan-out"].svg.count("fork-join") >= 1
