"""Chart validation: each rule is broken by a table and reported with file, line and name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from statesaga import CompiledChart, DefinitionError, Registry, TransitionError, load_chart
from statesaga.charts.lifecycles import lifecycle
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
    import yaml

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
