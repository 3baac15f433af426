"""What a handler returns is kept as the store keeps it, and a result the store cannot keep
fails the call instead of the save.

Found by hand: a handler returning an object JSON cannot carry made the settle's save raise
(pydantic's serialization error out of `engine.run`) and left the step claimed, EXECUTING,
with nothing settled, for recovery to run again into the same error; and a step run
eagerly after another saw its tuple, datetime or set as Python objects where a step whose
document was read back saw lists and strings."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from statesaga import Registry
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.models import StepStatus, WorkflowStatus

SAGA = {
    "workflow": "results",
    "defaults": {"retry": {"max_attempts": 2, "initial_interval": 0.01}},
    "steps": [
        {"name": "book", "action": "book", "compensation": {"action": "unbook"}},
        {"name": "make", "action": "make", "compensation": {"action": "unmake"}},
        {"name": "use", "action": "use", "params": {"given": "${steps.make.value}"}},
    ],
}


def engine(tmp_path: Path, made: Any, undo: Any = None) -> tuple[Engine, list[Any]]:
    """The saga on a SQLite file; `make` returns {"value": made}; `use` records what it got
    (its params and the results it sees) in the returned list, effects too."""
    seen: list[Any] = []
    registry = Registry()
    registry.register_handler("book", lambda ctx: seen.append("book") or {"booked": True})
    registry.register_handler("unbook", lambda ctx: seen.append("unbook"))
    registry.register_handler("make", lambda ctx: {"value": made})
    registry.register_handler("unmake", lambda ctx: undo)
    registry.register_handler(
        "use", lambda ctx: seen.append((ctx.params["given"], ctx.results["make"]["value"]))
    )
    store = SQLiteStore(tmp_path / "store.db")
    return Engine(store, InlineQueue(), registry, heartbeat_interval=0), seen


def test_the_next_step_sees_a_result_as_the_store_keeps_it(tmp_path: Path) -> None:
    made = {
        "pair": (1, 2),
        "at": datetime.datetime(2026, 12, 7, 4, 0, tzinfo=datetime.UTC),
        "tags": {"a"},
        3: "a key that is a number",
    }
    eng, seen = engine(tmp_path, made)
    wf = eng.run(load_definition(SAGA))
    assert wf.status is WorkflowStatus.COMPLETED
    kept = eng.store.get(wf.id).results["make"]["value"]
    # What the document holds, read back from the file ...
    assert kept == {"pair": [1, 2], "at": "2026-12-07T04:00:00Z", "tags": ["a"], "3": made[3]}
    # ... is what the step run right after it in this process was given, as params and as
    # results, with the same types (a re-read after a crash would give it the same).
    given, result = seen[-1]
    assert given == kept and result == kept
    assert json.dumps(given, sort_keys=True) == json.dumps(kept, sort_keys=True)


@pytest.mark.parametrize(
    ("made", "error", "where"),
    [
        (object(), "TypeError", "result.value: object is not a JSON value"),
        ([1.0, float("nan")], "ValueError", "result.value[1]: nan is not a finite number"),
        ({"deep": [{"x": float("inf")}]}, "ValueError", "result.value.deep[0].x: inf"),
        (b"\xff\xfe", "TypeError", "result.value: bytes is not a JSON value"),
        ("r\udce9sum\udce9.txt", "TypeError", "result.value: text that is not Unicode"),
        ([2, 10**4300], "ValueError", "result.value[1]: an integer of more than 4300 digits"),
    ],
)
def test_a_result_the_store_cannot_keep_fails_the_step_and_the_saga_unwinds(
    tmp_path: Path, made: Any, error: str, where: str
) -> None:
    eng, seen = engine(tmp_path, made)
    wf = eng.run(load_definition(SAGA))  # no exception out of the engine
    assert wf.status is WorkflowStatus.COMPENSATED
    make = wf.step("make")
    assert make.status is StepStatus.FAILED and make.attempts == 2  # its retry policy applied
    assert make.error is not None and make.error.type == error
    assert "the store cannot keep as JSON" in make.error.message and where in make.error.message
    # The step before it was undone once; the step after it never ran.
    assert seen == ["book", "unbook"]
    assert eng.store.get(wf.id).status is WorkflowStatus.COMPENSATED


def test_a_circular_result_is_named_not_followed(tmp_path: Path) -> None:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    eng, _ = engine(tmp_path, loop)
    wf = eng.run(load_definition(SAGA))
    error = wf.step("make").error
    assert wf.status is WorkflowStatus.COMPENSATED and error is not None
    assert "result.value.self: refers back to itself" in error.message


def test_a_compensation_result_the_store_cannot_keep_fails_the_compensation(
    tmp_path: Path,
) -> None:
    """The same rule for an undo: its result is kept on the document too."""
    saga = {**SAGA, "steps": [*SAGA["steps"][:2], {"name": "use", "action": "boom"}]}
    eng, _ = engine(tmp_path, "fine", undo={"receipt": object()})
    eng.registry.register_handler("boom", lambda ctx: 1 / 0)
    wf = eng.run(load_definition(saga))
    comp = wf.step("make").compensation
    assert comp is not None and comp.error is not None
    assert comp.error.type == "TypeError"
    assert "result.receipt: object is not a JSON value" in comp.error.message
    # The saga halts for an operator, as for any compensation that keeps failing.
    assert wf.status is WorkflowStatus.FAILED


class Unreadable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def raising(exc: Exception) -> Any:
    def handler(ctx: Any) -> Any:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "error", "message"),
    [
        # Found by hand, each left the saga RUNNING with its step EXECUTING and raised out of
        # `engine.run`: a message that cannot be read, and a message naming a file whose
        # name has bytes that are not UTF-8 (Python carries them as lone surrogates, as
        # os.listdir gives them).
        (Unreadable(), "Unreadable", "(Unreadable whose message could not be read)"),
        (
            ValueError("cannot parse /data/r\udce9sum\udce9.txt"),
            "ValueError",
            "cannot parse /data/r\\udce9sum\\udce9.txt",
        ),
    ],
)
def test_an_exception_whose_message_the_store_cannot_keep_still_fails_the_step(
    tmp_path: Path, exc: Exception, error: str, message: str
) -> None:
    eng, seen = engine(tmp_path, "fine")
    eng.registry.register_handler("make", raising(exc), replace=True)
    wf = eng.run(load_definition(SAGA))
    make = wf.step("make")
    assert wf.status is WorkflowStatus.COMPENSATED and seen == ["book", "unbook"]
    assert make.error is not None and make.error.type == error
    assert make.error.message == message
    # Stored as written here: the file reads back the same text.
    assert eng.store.get(wf.id).step("make").error == make.error


def test_a_huge_error_message_is_kept_cut_in_the_step_and_its_history(tmp_path: Path) -> None:
    eng, _ = engine(tmp_path, "fine")
    eng.registry.register_handler("make", raising(ValueError("x" * 3_000_000)), replace=True)
    wf = eng.run(load_definition(SAGA))
    make = wf.step("make")
    assert make.error is not None
    assert make.error.message == "x" * 4000 + "… (2996000 more characters)"
    details = [e.detail or "" for e in wf.history if e.step == "make"]
    assert details and max(len(d) for d in details) < 4100
    assert len(eng.store.get(wf.id).to_json()) < 60_000  # not megabytes per attempt


def test_a_progress_detail_is_kept_as_an_error_message_is(tmp_path: Path) -> None:
    """`ctx.progress(trigger, detail)` puts the detail in the history: a file name with bytes
    that are not UTF-8 made that save fail inside the handler, and a megabyte was saved."""
    eng, definition, original = H.agent_task_engine(tmp_path)

    def research(ctx: Any) -> Any:
        ctx.progress("tool_called", "open /data/r\udce9sum\udce9.txt " + "x" * 10_000)
        ctx.progress("tool_returned")
        return original(ctx)

    eng.registry.register_handler("research_with_tools", research, replace=True)
    wf = eng.run(definition, {"topic": "sagas"})
    assert wf.status is WorkflowStatus.COMPLETED
    called = [
        e.detail or ""
        for e in eng.store.get(wf.id).history
        if e.trigger == "tool_called" and (e.detail or "").startswith("open ")
    ]
    assert len(called) == 1
    assert called[0].startswith("open /data/r\\udce9sum\\udce9.txt xxx")
    assert called[0].endswith("… (6032 more characters)") and len(called[0]) < 4100


def test_a_bare_text_result_that_is_not_unicode_fails_the_step(tmp_path: Path) -> None:
    """A whole result that is text (not inside a dict) takes the same check: a file name
    read from disk, with bytes that are not UTF-8, would fail the save."""
    eng, seen = engine(tmp_path, "fine")
    eng.registry.register_handler("make", lambda ctx: "r\udce9sum\udce9.txt", replace=True)
    wf = eng.run(load_definition(SAGA))
    error = wf.step("make").error
    assert wf.status is WorkflowStatus.COMPENSATED and seen == ["book", "unbook"]
    assert error is not None and "result: text that is not Unicode" in error.message


def test_a_bare_integer_too_long_to_read_back_fails_the_step(tmp_path: Path) -> None:
    """JSON has no limit on an integer, but every reader of a stored document refuses one of
    more than 4,300 digits (Python's int/str limit): saved, the workflow could never be read
    again. The whole result's check (not inside a dict) takes it too."""
    eng, seen = engine(tmp_path, "fine")
    eng.registry.register_handler("make", lambda ctx: 10**4300, replace=True)
    wf = eng.run(load_definition(SAGA))
    error = wf.step("make").error
    assert wf.status is WorkflowStatus.COMPENSATED and seen == ["book", "unbook"]
    assert error is not None and error.type == "ValueError"
    assert "result: an integer of more than 4300 digits cannot be stored" in error.message
    assert eng.store.get(wf.id).status is WorkflowStatus.COMPENSATED  # readable
    # One digit fewer is an integer like any other, kept exactly.
    eng.registry.register_handler("make", lambda ctx: {"value": 10**4299}, replace=True)
    wf = eng.run(load_definition(SAGA))
    assert wf.status is WorkflowStatus.COMPLETED
    assert eng.store.get(wf.id).results["make"]["value"] == 10**4299
