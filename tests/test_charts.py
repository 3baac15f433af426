"""Chart validation: each rule is broken by a table and reported with file, line and name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from statesaga import CompiledChart, DefinitionError, Registry, TransitionError, load_chart
from statesaga._yaml import LineMap
from statesaga.charts import checks
from statesaga.charts.chart import SHIPPED, shipped_chart
from statesaga.charts.lifecycles import ENUMS, lifecycle
from statesaga.charts.spec import parse_spec
from statesaga.models import StepStatus, TodoStatus, WorkflowStatus

GOOD = """\
chart: door
initial: closed
states:
  - name: closed
  - name: open
  - name: broken
    final: true
transitions:
  - trigger: open
    source: closed
    dest: open
  - trigger: close
    source: open
    dest: closed
  - trigger: smash
    source: "*"
    dest: broken
"""


TRAP = """\
chart: trap
initial: a
states:
  - name: a
  - name: b
  - name: stuck
  - name: end
    final: true
transitions:
  - {trigger: go, source: a, dest: b}
  - {trigger: fall, source: b, dest: stuck}
  - {trigger: finish, source: b, dest: end}
"""


def write(tmp_path: Path, text: str, name: str = "chart.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_chart(write(tmp_path, text))
    return [str(p) for p in info.value.problems]


def test_good_chart_loads_and_wildcard_expands_to_non_final_states(tmp_path: Path) -> None:
    chart = load_chart(write(tmp_path, GOOD))
    smash = [t for t in chart.transitions if t.trigger == "smash"]
    assert smash[0].source == ("closed", "open")
    assert chart.allowed_triggers("closed") == ["open", "smash"]
    assert chart.final_states == {"broken"}


def test_a_dict_is_accepted_like_yaml() -> None:
    chart = load_chart(yaml.safe_load(GOOD))
    assert chart.name == "door"


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("chart: x\ninitial: a\nstates: [\n", 4, "YAML syntax error"),
        (
            GOOD.replace("initial: closed", "initial: closed\ncolour: red"),
            3,
            "unknown key 'colour'",
        ),
        (GOOD.replace("initial: closed\n", ""), None, "missing required key 'initial'"),
        (
            GOOD.replace("initial: closed", "initial: ajar"),
            2,
            "initial state 'ajar' is not defined",
        ),
        (GOOD.replace("    dest: closed", "    dest: locked"), 14, "undefined state 'locked'"),
        (GOOD.replace("    source: open\n", "    source: attic\n"), 13, "undefined state 'attic'"),
        (
            GOOD.replace("  - name: open\n", "  - name: open\n  - name: closed\n"),
            6,
            "duplicate state name 'closed'",
        ),
        (
            GOOD + "  - trigger: fix\n    source: broken\n    dest: closed\n",
            19,
            "final state 'broken' has an outgoing",
        ),
        (TRAP, 6, "'stuck' is not final and has no way out"),
        (
            GOOD.replace("  - name: open\n", "  - name: open\n  - name: ghost\n    final: true\n"),
            6,
            "'ghost' is unreachable",
        ),
        (
            GOOD + "  - trigger: open\n    source: closed\n    dest: broken\n",
            18,
            "non-deterministic: trigger 'open' from 'closed'",
        ),
        ("chart: x\nchart: y\n", 2, "duplicate key 'chart'"),
    ],
    ids=[
        "yaml-syntax",
        "unknown-key",
        "missing-initial",
        "undefined-initial",
        "undefined-dest",
        "undefined-source",
        "duplicate-state",
        "final-with-exit",
        "trap-state",
        "unreachable",
        "non-deterministic",
        "duplicate-key",
    ],
)
def test_each_rule_names_file_line_and_offender(
    tmp_path: Path, text: str, line: int | None, needle: str
) -> None:
    found = problems(tmp_path, text)
    match = [p for p in found if needle in p]
    assert match, found
    expected_prefix = (
        f"{tmp_path / 'chart.yaml'}:{line}:" if line else f"{tmp_path / 'chart.yaml'}:"
    )
    assert match[0].startswith(expected_prefix), match[0]


def test_errors_are_collected_not_stopped_at_the_first(tmp_path: Path) -> None:
    text = GOOD.replace("initial: closed", "initial: ajar").replace(
        "    dest: closed", "    dest: locked"
    )
    found = problems(tmp_path, text)
    assert any("'ajar'" in p for p in found) and any("'locked'" in p for p in found)


def test_guarded_duplicates_are_deterministic(tmp_path: Path) -> None:
    text = GOOD + "  - trigger: open\n    source: closed\n    dest: broken\n    guards: [forced]\n"
    assert load_chart(write(tmp_path, text)).transitions_from("closed", "open")


def test_unknown_guard_and_effect_are_reported_when_bound(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    source: closed\n    dest: open\n",
        "    source: closed\n    dest: open\n    guards: [has_key]\n    effects: [ring_bell]\n",
    )
    chart = load_chart(write(tmp_path, text))
    with pytest.raises(DefinitionError) as info:
        chart.check_bindings(Registry())
    messages = [str(p) for p in info.value.problems]
    assert any("unknown guard 'has_key'" in m and ":12:" in m for m in messages), messages
    assert any("unknown effect 'ring_bell'" in m and ":13:" in m for m in messages), messages


def test_illegal_trigger_leaves_state_and_lists_allowed(tmp_path: Path) -> None:
    compiled = CompiledChart(load_chart(write(tmp_path, GOOD)))
    assert compiled.fire("closed", "open").dest == "open"
    with pytest.raises(TransitionError) as info:
        compiled.fire("closed", "close")
    err = info.value
    assert err.state == "closed" and err.trigger == "close"
    assert err.allowed == ["open", "smash"]
    assert "allowed triggers: open, smash" in str(err)
    # The shared machine is not left in a half state: the next fire still works.
    assert compiled.fire("open", "close").dest == "closed"


def test_guards_select_the_transition(tmp_path: Path) -> None:
    text = (
        GOOD
        + "  - trigger: open\n    source: closed\n    dest: broken\n    guards: [not careful]\n"
    )
    text = text.replace(
        "    source: closed\n    dest: open\n",
        "    source: closed\n    dest: open\n    guards: [careful]\n",
        1,
    )
    reg = Registry()
    reg.register_guard("careful", lambda ctx: bool(ctx))
    compiled = CompiledChart(load_chart(write(tmp_path, text)), reg)
    assert compiled.fire("closed", "open", True).dest == "open"
    assert compiled.fire("closed", "open", False).dest == "broken"


@pytest.mark.parametrize(
    ("name", "enum"), [("workflow", WorkflowStatus), ("step", StepStatus), ("todo", TodoStatus)]
)
def test_shipped_lifecycles_match_their_enums(name: str, enum: type) -> None:
    chart = lifecycle(name)
    assert set(chart.states) == {m.value for m in enum}


def test_todo_leaves_pending_by_the_event_dispatched() -> None:
    compiled = CompiledChart(lifecycle("todo"))
    assert compiled.allowed("pending") == ["cancelled", "dispatched"]
    assert compiled.fire("pending", "dispatched").dest == "dispatched"


def test_shipped_tables_carry_the_saga_effects() -> None:
    step = lifecycle("step")
    succeed = step.transitions_from("EXECUTING", "succeed")[0]
    assert [e.name for e in succeed.effects] == ["persist", "emit", "workflow"]
    assert succeed.effects[2].args == {"value": "advance"}
    start = lifecycle("workflow").transitions_from("PENDING", "start")[0]
    assert "schedule_ready" in start.effect_names


# -- the graph rules, one named check each -------------------------------------------------

_LEAF = {"chart": "c", "initial": "a"}
_FLAT = [{"name": "a"}, {"name": "z", "final": True}]
_TO_Z = [{"trigger": "go", "source": "a", "dest": "z"}]


def _nested(**parent: object) -> dict[str, object]:
    """A chart whose state `p` is given `parent`'s keys; `p` leaves for a final `z`."""
    return {
        **_LEAF,
        "initial": "p",
        "states": [{"name": "p", **parent}, {"name": "z", "final": True}],
        "transitions": [{"trigger": "go", "source": "p", "dest": "z"}],
    }


#: A chart breaking each rule, and the message that rule gives (unchanged by the split).
BROKEN: dict[str, tuple[dict[str, object], str]] = {
    "_check_initial_is_given": ({"chart": "c", "states": _FLAT}, "missing required key"),
    "_check_has_states": (_LEAF, "a chart needs at least one state"),
    "_check_unique_state_names": (
        {**_LEAF, "states": [*_FLAT, {"name": "a"}], "transitions": _TO_Z},
        "duplicate state name 'a'",
    ),
    "_check_final_states_are_leaves": (
        _nested(final=True, initial="x", states=[{"name": "x"}]),
        "final state 'p' cannot have children",
    ),
    "_check_parallel_states": (
        _nested(parallel=True, states=[{"name": "r"}]),
        "region 'p.r' of parallel state 'p' needs states of its own",
    ),
    "_check_compound_states_have_initial_child": (
        _nested(initial="y", states=[{"name": "x"}]),
        "initial child 'y' of 'p' is not one of its states",
    ),
    "_check_leaves_are_plain": (_nested(parallel=True), "'p' has 'initial'/'parallel' but no"),
    "_check_initial_state_exists": (
        {**_LEAF, "initial": "q", "states": _FLAT, "transitions": _TO_Z},
        "initial state 'q' is not defined",
    ),
    "_check_wildcard_stands_alone": (
        {**_LEAF, "states": _FLAT, "transitions": [{**_TO_Z[0], "source": ["*", "a"]}]},
        "'*' cannot be mixed with states",
    ),
    "_check_sources_exist": (
        {**_LEAF, "states": _FLAT, "transitions": [*_TO_Z, {**_TO_Z[0], "source": "q"}]},
        "transition 'go' comes from undefined state 'q'",
    ),
    "_check_final_states_have_no_way_out": (
        {
            **_LEAF,
            "states": _FLAT,
            "transitions": [*_TO_Z, {"trigger": "b", "source": "z", "dest": "a"}],
        },
        "final state 'z' has an outgoing transition 'b'",
    ),
    "_check_deterministic_triggers": (
        {**_LEAF, "states": _FLAT, "transitions": [*_TO_Z, *_TO_Z]},
        "non-deterministic: trigger 'go' from 'a' has two unguarded transitions",
    ),
    "_check_destinations_exist": (
        {**_LEAF, "states": _FLAT, "transitions": [*_TO_Z, {**_TO_Z[0], "dest": "q"}]},
        "transition 'go' goes to undefined state 'q'",
    ),
    "_check_trap_states": (
        {
            **_LEAF,
            "states": [*_FLAT, {"name": "t"}],
            "transitions": [*_TO_Z, {**_TO_Z[0], "trigger": "t", "dest": "t"}],
        },
        "state 't' is not final and has no way out",
    ),
    "_check_reachable_states": (
        {**_LEAF, "states": [*_FLAT, {"name": "u", "final": True}], "transitions": _TO_Z},
        "state 'u' is unreachable from the initial state 'a'",
    ),
}


def test_every_rule_is_a_named_check_that_runs() -> None:
    """A rule written in checks.py but missing from CHECKS would never run."""
    listed = [check.__name__ for stage in checks.CHECKS for check in stage]
    written = [name for name in vars(checks) if name.startswith("_check_")]
    assert sorted(listed) == sorted(written)
    assert len(set(listed)) == len(listed)
    assert sorted(BROKEN) == sorted(listed)


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_named_check_finds_its_rule_broken(name: str) -> None:
    data, message = BROKEN[name]
    spec = parse_spec(data, LineMap(None))
    check = getattr(checks, name)
    found = [p.message for p in check(checks._Graph(spec, LineMap(None)))]
    assert any(message in m for m in found), found
    with pytest.raises(DefinitionError) as info:
        load_chart(data)
    assert any(message in p.message for p in info.value.problems)
    # the chart without its breakage passes the rule: each check judges one thing
    assert not check(checks._Graph(parse_spec(GOOD_DATA, LineMap(None)), LineMap(None)))


GOOD_DATA = yaml.safe_load(GOOD)


def test_checking_stops_at_a_stage_whose_rules_the_next_ones_need() -> None:
    # no initial and no states: only the first rule speaks (nothing else can be judged)
    with pytest.raises(DefinitionError) as info:
        load_chart({"chart": "c"})
    assert [p.message for p in info.value.problems] == ["missing required key 'initial'"]
    # a malformed compound state stops before the graph rules, which would misread it
    with pytest.raises(DefinitionError) as info:
        load_chart(_nested(initial="y", states=[{"name": "x"}]))
    assert [p.message for p in info.value.problems] == [
        "initial child 'y' of 'p' is not one of its states"
    ]
    # a duplicate name does not: the later rules read the first state of that name
    broken, _ = BROKEN["_check_unique_state_names"]
    with pytest.raises(DefinitionError) as info:
        load_chart({**broken, "transitions": []})
    messages = [p.message for p in info.value.problems]
    assert messages[0] == "duplicate state name 'a'"
    assert any("is not final and has no way out" in m for m in messages[1:])


def test_the_shipped_lifecycles_are_the_ones_with_an_enum() -> None:
    assert set(SHIPPED) == set(ENUMS)
    for name in SHIPPED:
        assert lifecycle(name) is shipped_chart(name)


def test_the_chart_api_of_the_old_module_path_is_in_its_new_module() -> None:
    """CHANGELOG.md moves `statesaga.chart` to `statesaga.charts.chart` in one line: every
    name users imported from the old module is there."""
    import importlib

    old = importlib.import_module("statesaga.charts.chart")
    for name in ("Chart", "ChartSpec", "load_chart", "chart_from_data", "chart_json_schema"):
        assert hasattr(old, name), name
    assert old.load_chart is load_chart
    assert isinstance(old.chart_from_data(GOOD_DATA), old.Chart)
    assert old.chart_json_schema()["title"] == "statesaga chart"
