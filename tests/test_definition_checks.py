"""The rules a saga's table must satisfy as a whole: each named check, broken by a table, gives
its message located in the file; references are checked only once the steps make sense."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from statesaga import DefinitionError, load_definition
from statesaga._yaml import LineMap
from statesaga.definitions import checks as d
from statesaga.definitions.spec import DefinitionSpec


def saga(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"workflow": "w", "steps": list(steps), **extra}


A = {"name": "a", "action": "x"}
B = {"name": "b", "action": "y"}

#: A saga breaking each rule, and the message that rule gives.
BROKEN: dict[str, tuple[dict[str, Any], str]] = {
    "_check_unique_step_names": (saga(A, A), "duplicate step name 'a'"),
    "_check_dependencies_are_other_steps": (
        saga(A, {**B, "depends_on": ["b"]}),
        "step 'b' depends on itself",
    ),
    "_check_no_dependency_cycle": (
        saga({**A, "depends_on": ["b"]}, {**B, "depends_on": ["a"]}),
        "dependency cycle: a -> b -> a",
    ),
    "_check_one_pivot": (
        saga({**A, "pivot": True}, {**B, "pivot": True}),
        "more than one pivot step ('b')",
    ),
    "_check_pivot_is_not_compensated": (
        saga({**A, "pivot": True, "compensation": "undo"}),
        "pivot step 'a' cannot have a compensation: it is the point of no return",
    ),
    "_check_nothing_after_the_pivot_is_compensated": (
        saga({**A, "pivot": True}, {**B, "compensation": "undo"}),
        "step 'b' runs after the pivot 'a' and so cannot be compensated",
    ),
    "_check_references": (
        saga(A, {**B, "depends_on": [], "params": {"v": "${steps.a.id}"}}),
        "${steps.a.id}: step 'a' does not finish before 'b' starts",
    ),
}


def test_every_named_check_has_a_saga_that_breaks_it() -> None:
    assert sorted(BROKEN) == sorted(c.__name__ for stage in d.CHECKS for c in stage)


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_named_check_finds_its_rule_broken(name: str) -> None:
    data, message = BROKEN[name]
    steps = d._Steps(DefinitionSpec.model_validate(data), LineMap(None))
    assert any(message in p.message for p in getattr(d, name)(steps))
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    assert any(message in p.message for p in info.value.problems)
    # each check judges one thing: a sound saga passes it
    sound = d._Steps(DefinitionSpec.model_validate(saga(A, B)), LineMap(None))
    assert getattr(d, name)(sound) == []


def test_references_wait_for_the_steps_to_make_sense() -> None:
    data = saga(A, A, {**B, "params": {"v": "${steps.nope}"}})
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    assert [p.message for p in info.value.problems] == ["duplicate step name 'a'"]


def test_the_pivot_rules_stay_silent_on_a_cycle() -> None:
    data = saga(
        {**A, "pivot": True, "compensation": "undo", "depends_on": ["b"]},
        {**B, "depends_on": ["a"], "compensation": "undo"},
    )
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    assert [p.message for p in info.value.problems] == ["dependency cycle: a -> b -> a"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"compensation": "undo"},
            "step 'look' is read_only (it has no effect), so it cannot have",
        ),
        ({"pivot": True}, "step 'look' is read_only (it has no effect), so it cannot be the pivot"),
    ],
)
def test_a_read_only_step_has_nothing_to_undo_and_is_no_pivot(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    import yaml

    path = tmp_path / "saga.yaml"
    step = {"name": "look", "action": "look", "read_only": True, **extra}
    path.write_text(yaml.safe_dump({"workflow": "w", "steps": [step]}, sort_keys=False))
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    [problem] = [p for p in info.value.problems if message in p.message]
    assert problem.line == 3 and problem.field == "steps.0", problem
    assert load_definition({"workflow": "w", "steps": [{"name": "look", "action": "look",
                            "read_only": True}]}).steps[0].read_only  # fmt: skip
