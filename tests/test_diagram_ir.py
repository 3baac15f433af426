"""The diagram IR on its own: extractors from charts, definitions and live instances."""

from __future__ import annotations

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from statesaga.chart import load_chart
from statesaga.definition import load_definition
from statesaga.diagram import (
    Diagram,
    DiagramEdge,
    DiagramNode,
    DiagramNote,
    from_chart,
    from_definition,
    from_instance,
    get_renderer,
)
from statesaga.diagram.extract import DONE, UNDONE
from statesaga.errors import AdapterError
from statesaga.examples import path as example_path
from statesaga.lifecycles import lifecycle


@pytest.mark.parametrize("name", ["workflow", "step", "todo"])
def test_chart_nodes_and_edges_follow_the_table(name: str) -> None:
    chart = lifecycle(name)
    d = from_chart(chart)
    assert [n.id for n in d.nodes] == list(chart.states)
    assert [n.id for n in d.initial] == [chart.initial]
    assert {n.id for n in d.finals} == set(chart.final_states)
    # One edge per concrete source of every transition (wildcards already expanded).
    assert len(d.edges) == sum(len(t.source) for t in chart.transitions)
    assert {(e.src, e.dst, e.label) for e in d.edges} == {
        (s, t.dest, t.trigger) for t in chart.transitions for s in t.source
    }


def test_chart_detail_adds_effects_and_notes_but_guards_are_always_there() -> None:
    chart = lifecycle("step")
    plain, detail = from_chart(chart), from_chart(chart, detail=True)
    fail_retry = [e for e in plain.edges if e.label == "fail" and e.dst == "RETRYING"]
    assert fail_retry and fail_retry[0].guards == ("can_retry",)
    assert all(e.effects == () for e in plain.edges) and plain.notes == ()
    assert any("persist" in e.effects for e in detail.edges)
    described = {s.name for s in chart.states.values() if s.description}
    assert {n.target for n in detail.notes} == described


def test_chart_styles_come_from_tags_and_compensation_edges_from_effects() -> None:
    d = from_chart(lifecycle("workflow"))
    assert d.node("COMPLETED").style == "success"
    assert d.node("FAILED").style == "failure"
    assert d.node("COMPENSATED").style == "rolled_back"
    kinds = {(e.src, e.dst, e.label): e.kind for e in d.edges}
    assert kinds[("RUNNING", "COMPENSATING", "step_failed")] == "compensation"
    assert kinds[("PENDING", "RUNNING", "start")] == "forward"


def test_wildcard_sources_are_expanded() -> None:
    chart = load_chart(
        {
            "chart": "w",
            "initial": "a",
            "states": [{"name": "a"}, {"name": "b"}, {"name": "x", "final": True}],
            "transitions": [
                {"trigger": "go", "source": "a", "dest": "b"},
                {"trigger": "stop", "source": "*", "dest": "x"},
            ],
        }
    )
    d = from_chart(chart)
    assert sorted((e.src, e.dst) for e in d.edges if e.label == "stop") == [("a", "x"), ("b", "x")]


def test_definition_is_a_chain_with_back_edges_until_the_pivot() -> None:
    d = from_definition(load_definition(example_path("trip")))
    fwd = [(e.src, e.dst) for e in d.edges if e.kind == "forward"]
    assert fwd == [
        ("reserve_flight", "reserve_hotel"),
        ("reserve_hotel", "reserve_car"),
        ("reserve_car", "charge_payment"),
        ("charge_payment", "send_confirmation"),
        ("send_confirmation", DONE),
    ]
    back = {(e.src, e.dst): e.label for e in d.edges if e.kind == "compensation"}
    assert back == {
        ("reserve_flight", UNDONE): "undo cancel_flight",
        ("reserve_hotel", "reserve_flight"): "undo cancel_hotel",
        ("reserve_car", "reserve_hotel"): "undo cancel_car",
    }
    assert d.node("charge_payment").style == "pivot"
    assert [n.target for n in d.notes] == ["charge_payment"]
    assert [n.id for n in d.initial] == ["reserve_flight"]
    assert {n.id for n in d.finals} == {DONE, UNDONE}


def test_definition_dag_from_depends_on() -> None:
    d = from_definition(
        load_definition(
            {
                "workflow": "dag",
                "steps": [
                    {"name": "a", "action": "x", "compensation": "undo_a"},
                    {"name": "b", "action": "x", "depends_on": [], "description": "parallel"},
                    {"name": "c", "action": "x", "depends_on": ["a", "b"]},
                ],
            }
        )
    )
    assert {n.id for n in d.initial} == {"a", "b"}
    assert {(e.src, e.dst) for e in d.edges if e.kind == "forward"} == {
        ("a", "c"),
        ("b", "c"),
        ("c", DONE),
    }
    back = {(e.src, e.dst): e.label for e in d.edges if e.kind == "compensation"}
    assert back == {
        ("a", UNDONE): "undo undo_a",
        ("b", UNDONE): "nothing to undo",
        ("c", "a"): "nothing to undo",
        ("c", "b"): "nothing to undo",
    }
    assert DiagramNote("b", "parallel") in d.notes


def test_definition_without_undoable_steps_has_no_compensated_outcome() -> None:
    d = from_definition(
        load_definition({"workflow": "p", "steps": [{"name": "pay", "action": "x", "pivot": True}]})
    )
    assert {n.id for n in d.nodes} == {"pay", DONE}
    assert all(e.kind == "forward" for e in d.edges)


def test_instance_steps_view_colours_statuses_and_numbers_the_path() -> None:
    wf = H.live_trip()
    d = from_instance(wf, load_definition(example_path("trip")))
    assert d.title == f"trip_booking {wf.id}: COMPENSATED"
    assert {n.id: n.style for n in d.nodes} == {
        "reserve_flight": "compensated",
        "reserve_hotel": "compensated",
        "reserve_car": "failed",
        "charge_payment": "skipped",
        "send_confirmation": "skipped",
        DONE: "success",
        UNDONE: "current",
    }
    assert d.node(UNDONE).current and not d.node(DONE).current
    assert d.node("reserve_car").status == "FAILED"
    taken = {(e.src, e.dst): e.taken for e in d.edges}
    # Positions in the history (1-based): dispatches at 2, 5, 7; compensations at 10 and 12.
    assert taken[("reserve_flight", "reserve_hotel")] == 5
    assert taken[("reserve_hotel", "reserve_car")] == 7
    assert taken[("reserve_car", "charge_payment")] is None
    assert taken[("send_confirmation", DONE)] is None
    assert taken[("reserve_hotel", "reserve_flight")] == 10
    assert taken[("reserve_flight", UNDONE)] == 12
    assert taken[("reserve_car", "reserve_hotel")] is None  # it failed: nothing to undo
    assert any(n.target == "reserve_car" and "Boom" in n.text for n in d.notes)


def test_instance_marks_steps_in_flight_as_current() -> None:
    wf = load_definition(example_path("trip")).instantiate({})
    wf.step("reserve_flight").status = H.StepStatus.EXECUTING
    d = from_instance(wf)
    assert d.node("reserve_flight").current and d.node("reserve_flight").style == "executing"
    assert not d.node("reserve_hotel").current and d.node("reserve_hotel").style == "pending"
    assert not any(e.taken for e in d.edges)


def test_instance_workflow_view_marks_current_state_and_path() -> None:
    d = from_instance(H.live_trip(), view="workflow")
    assert [n.id for n in d.nodes if n.current] == ["COMPENSATED"]
    assert d.node("RUNNING").style == "visited" and d.node("COMPLETED").style == "default"
    taken = {(e.src, e.dst, e.label): e.taken for e in d.edges if e.taken}
    assert taken == {
        ("PENDING", "RUNNING", "start"): 1,
        ("RUNNING", "RUNNING", "advance"): 2,
        ("RUNNING", "COMPENSATING", "step_failed"): 3,
        ("COMPENSATING", "COMPENSATED", "compensated"): 4,
    }


def test_diagram_rejects_inconsistent_graphs() -> None:
    a = DiagramNode("a", "a")
    with pytest.raises(ValueError, match="duplicate"):
        Diagram("t", (a, a))
    with pytest.raises(ValueError, match="unknown node"):
        Diagram("t", (a,), (DiagramEdge("a", "b"),))
    with pytest.raises(ValueError, match="note on unknown"):
        Diagram("t", (a,), notes=(DiagramNote("b", "x"),))


def test_ir_is_frozen_and_comparable() -> None:
    d1 = from_chart(lifecycle("todo"))
    d2 = from_chart(lifecycle("todo"))
    assert d1 == d2
    with pytest.raises(AttributeError):
        d1.nodes[0].label = "x"  # type: ignore[misc]


def test_unknown_renderer_is_an_adapter_error() -> None:
    with pytest.raises(AdapterError, match="no statesaga.renderers plugin named 'nope'"):
        get_renderer("nope")


def test_plugin_not_matching_the_port_is_rejected_when_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NotARenderer:
        name = "bad"

    monkeypatch.setattr("statesaga.plugins.load", lambda group, name: NotARenderer)
    with pytest.raises(AdapterError, match="'bad' is not a Renderer: missing extension, render"):
        get_renderer("bad")


def test_third_party_renderer_plugs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    class PlantUML:
        name = "plantuml"
        extension = "puml"

        def render(self, diagram: Diagram) -> str:
            lines = [f"{e.src} --> {e.dst}" for e in diagram.edges]
            return "@startuml\n" + "\n".join(lines) + "\n@enduml\n"

    seen = []

    def fake_load(group: str, name: str) -> object:
        seen.append((group, name))
        return PlantUML

    monkeypatch.setattr("statesaga.plugins.load", fake_load)
    out = get_renderer("plantuml").render(from_chart(lifecycle("todo")))
    assert seen == [("statesaga.renderers", "plantuml")]
    assert "pending --> dispatched" in str(out)
