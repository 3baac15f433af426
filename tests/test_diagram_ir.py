"""The diagram IR on its own: extractors from charts, definitions and live instances."""

from __future__ import annotations

from pathlib import Path

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from statesaga.charts.chart import load_chart
from statesaga.charts.lifecycles import lifecycle
from statesaga.definitions.load import load_definition
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
from statesaga.diagram.extract import DONE, HALTED, UNDONE
from statesaga.diagram.model import order_text
from statesaga.errors import AdapterError
from statesaga.examples import path as example_path


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
    # The saga was compensated: its COMPLETED end is not drawn, nor any arrow into it.
    assert {n.id: n.style for n in d.nodes} == {
        "reserve_flight": "compensated",
        "reserve_hotel": "compensated",
        "reserve_car": "failed",
        "charge_payment": "skipped",
        "send_confirmation": "skipped",
        UNDONE: "current",
    }
    assert d.node(UNDONE).current
    assert d.node("reserve_car").status == "FAILED"
    assert all(e.dst != DONE for e in d.edges)
    taken = {(e.src, e.dst): e.taken for e in d.edges}
    # The path, numbered 1, 2, 3, … without gaps: hotel and car dispatched, then unwound.
    assert taken[("reserve_flight", "reserve_hotel")] == (1,)
    assert taken[("reserve_hotel", "reserve_car")] == (2,)
    assert taken[("reserve_car", "charge_payment")] == ()
    assert taken[("reserve_hotel", "reserve_flight")] == (3,)
    assert taken[("reserve_flight", UNDONE)] == (4,)
    assert taken[("reserve_car", "reserve_hotel")] == ()  # it failed: nothing to undo
    assert any(n.target == "reserve_car" and "Boom" in n.text for n in d.notes)


def test_instance_halted_after_the_pivot_shows_the_failed_end_and_why() -> None:
    wf = load_definition(example_path("trip")).instantiate({})
    wf.status = H.WorkflowStatus.FAILED
    for s in wf.steps:
        s.status = H.StepStatus.COMPLETED
    last = wf.step("send_confirmation")
    last.status = H.StepStatus.FAILED
    last.error = H.StepError(type="SMTPError", message="mail server down")
    d = from_instance(wf)
    assert {n.id for n in d.nodes if n.id.startswith("workflow:")} == {HALTED}
    assert d.node(HALTED).style == "failure" and d.node(HALTED).current
    assert [(e.src, e.label) for e in d.edges if e.dst == HALTED] == [
        ("send_confirmation", "failed, not compensated")
    ]
    # Nothing was undone, so no way back is drawn; the reason is on the FAILED end, once.
    assert not any(e.kind == "compensation" for e in d.edges)
    (why,) = [n.text for n in d.notes if n.target == HALTED]
    assert max(len(line) for line in why.splitlines()) <= 60  # wrapped, not one long line
    assert why.replace("\n", " ") == (
        "step send_confirmation failed after the pivot charge_payment, so nothing is undone: "
        "SMTPError: mail server down"
    )
    assert not any(n.target == "send_confirmation" and "SMTPError" in n.text for n in d.notes)


def test_instance_failed_compensation_shows_the_error_and_where_it_stopped() -> None:
    wf = H.live_trip()
    wf.status = H.WorkflowStatus.FAILED
    wf.reason = "compensation of reserve_hotel failed: ApiDown: refused"
    wf.step("reserve_flight").status = H.StepStatus.COMPLETED
    hotel = wf.step("reserve_hotel")
    hotel.status = H.StepStatus.COMPENSATION_FAILED
    assert hotel.compensation is not None
    hotel.compensation.error = H.StepError(type="ApiDown", message="refused")
    wf.history = [h for h in wf.history if h.step != "reserve_flight" or h.trigger != "compensate"]
    d = from_instance(wf)
    assert d.node("reserve_flight").status == "COMPLETED, not undone"
    assert d.node("reserve_hotel").style == "compensation_failed"
    assert [(e.src, e.label) for e in d.edges if e.dst == HALTED] == [
        ("reserve_hotel", "compensation failed")
    ]
    assert [n.text for n in d.notes if n.target == HALTED] == [wf.reason]
    assert UNDONE not in {n.id for n in d.nodes} and DONE not in {n.id for n in d.nodes}


def test_instance_marks_steps_in_flight_as_current() -> None:
    wf = load_definition(example_path("trip")).instantiate({})
    wf.step("reserve_flight").status = H.StepStatus.EXECUTING
    d = from_instance(wf)
    assert d.node("reserve_flight").current and d.node("reserve_flight").style == "executing"
    assert not d.node("reserve_hotel").current and d.node("reserve_hotel").style == "pending"
    assert not any(e.taken for e in d.edges)
    # Still running: both ways it may end are drawn.
    assert {DONE, UNDONE} <= {n.id for n in d.nodes}


def test_instance_workflow_view_marks_current_state_and_path() -> None:
    d = from_instance(H.live_trip(), view="workflow")
    assert [n.id for n in d.nodes if n.current] == ["COMPENSATED"]
    assert d.node("COMPENSATED").status == "current"
    assert d.node("RUNNING").style == "visited" and d.node("COMPLETED").style == "unvisited"
    taken = {(e.src, e.dst, e.label): e.taken for e in d.edges if e.taken}
    assert taken == {
        ("PENDING", "RUNNING", "start"): (1,),
        ("RUNNING", "RUNNING", "advance"): (2,),
        ("RUNNING", "COMPENSATING", "step_failed"): (3,),
        ("COMPENSATING", "COMPENSATED", "compensated"): (4,),
    }


def test_live_path_numbers_every_pass_of_a_loop() -> None:
    wf = H.live_trip()
    entry = next(h for h in wf.history if h.trigger == "advance")
    at = wf.history.index(entry)
    wf.history[at:at] = [entry.model_copy(), entry.model_copy()]  # three advances in a row
    d = from_instance(wf, view="workflow")
    taken = {e.label: e.taken for e in d.edges if e.taken}
    assert taken["advance"] == (2, 3, 4) and taken["step_failed"] == (5,)
    assert order_text((2, 3, 4)) == "2\u20134." and order_text((1, 3)) == "1, 3."
    assert order_text((2, 3)) == "2, 3." and order_text(()) == ""


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


def test_a_live_path_goes_through_the_waits_and_sleeps_it_took(tmp_path: Path) -> None:
    """Issue 28: a wait or a sleep never runs a handler (no EXECUTING), and the path through
    it was drawn faded, numbered past it. A real run: submit, the approval's signal, a sleep,
    the payment and the notice."""
    from statesaga.adapters.queues.inline import InlineQueue
    from statesaga.adapters.stores.sqlite import SQLiteStore
    from statesaga.engine import Engine
    from statesaga.examples import expense_handlers

    data = load_definition(example_path("expense")).spec.model_dump(mode="json", by_alias=True)
    steps = data["steps"]
    steps.insert(2, {"name": "cool_down", "duration": 0.01})
    definition = load_definition(
        {"workflow": "expense_claim", "defaults": {"timeout": 30},
         "steps": [{k: v for k, v in s.items() if v not in (None, "", {}, ())} for s in steps]}
    )  # fmt: skip
    engine = Engine(
        SQLiteStore(tmp_path / "s.db"), InlineQueue(), handlers=[expense_handlers],
        heartbeat_interval=0,
    )  # fmt: skip
    wf = engine.run(definition, {"employee": "bob", "amount": 120})
    engine.signal(wf.id, "approve", {"by": "alice"})
    done = engine.wait(wf.id, timeout=30)
    assert done.status is H.WorkflowStatus.COMPLETED
    d = from_instance(done)
    taken = {(e.src, e.dst): e.taken for e in d.edges if e.kind == "forward"}
    assert taken[("submit", "approval")] == (1,)
    assert taken[("approval", "cool_down")] == (2,)
    assert taken[("cool_down", "pay")] == (3,)
    assert taken[("pay", "notify")] == (4,)
    assert taken[("notify", DONE)] == (5,)
