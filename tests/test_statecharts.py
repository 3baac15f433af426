"""Nested states, parallel regions and extensions of the shipped lifecycles (issue 12)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from statesaga import (
    CompiledChart,
    DefinitionError,
    Job,
    StepStatus,
    TransitionError,
    WorkflowStatus,
    load_chart,
)
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.sqlite import SQLiteStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.errors import StateError
from statesaga.examples import path as example

NESTED = """\
chart: call
initial: IDLE
states:
  - name: IDLE
  - name: BUSY
    initial: DIALING
    states:
      - name: DIALING
      - name: TALKING
      - name: HUNG_UP
        final: true
  - name: BOTH
    parallel: true
    states:
      - name: audio
        initial: muted
        states: [{name: muted}, {name: live}]
      - name: video
        initial: dark
        states: [{name: dark}, {name: lit}]
  - name: DONE
    final: true
transitions:
  - {trigger: call, source: IDLE, dest: BUSY}
  - {trigger: answer, source: BUSY.DIALING, dest: BUSY.TALKING}
  - {trigger: hang_up, source: BUSY.TALKING, dest: BUSY.HUNG_UP}
  - {trigger: drop, source: BUSY, dest: DONE}
  - {trigger: conference, source: BUSY.TALKING, dest: BOTH}
  - {trigger: unmute, source: BOTH.audio.muted, dest: BOTH.audio.live}
  - {trigger: camera, source: BOTH.video.dark, dest: BOTH.video.lit}
  - {trigger: leave, source: BOTH, dest: DONE}
"""


def write(tmp_path: Path, text: str, name: str = "chart.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_chart(path)
    return [str(p) for p in info.value.problems]


def test_compound_states_enter_their_initial_child_and_parents_transitions_apply(
    tmp_path: Path,
) -> None:
    compiled = CompiledChart(load_chart(write(tmp_path, NESTED)))
    assert compiled.hierarchical
    assert compiled.fire_to("IDLE", "call").state == "BUSY.DIALING"
    assert compiled.fire_to("BUSY.DIALING", "answer").state == "BUSY.TALKING"
    # `drop` is written on BUSY and fires from any child.
    fired = compiled.fire_to("BUSY.TALKING", "drop")
    assert fired.state == "DONE" and fired.transition.source == ("BUSY",)
    assert compiled.chart.allowed_triggers("BUSY.DIALING") == ["answer", "drop"]


def test_parallel_regions_are_all_active(tmp_path: Path) -> None:
    compiled = CompiledChart(load_chart(write(tmp_path, NESTED)))
    both = compiled.fire_to("BUSY.TALKING", "conference").state
    assert both == ["BOTH.audio.muted", "BOTH.video.dark"]
    after = compiled.fire_to(both, "unmute").state
    assert after == ["BOTH.audio.live", "BOTH.video.dark"]
    assert compiled.fire_to(after, "leave").state == "DONE"


def test_illegal_trigger_in_a_child_names_the_path_and_the_allowed(tmp_path: Path) -> None:
    compiled = CompiledChart(load_chart(write(tmp_path, NESTED)))
    with pytest.raises(TransitionError) as info:
        compiled.fire("BUSY.DIALING", "hang_up")
    assert info.value.state == "BUSY.DIALING" and info.value.allowed == ["answer", "drop"]


@pytest.mark.parametrize(
    ("edit", "line", "needle"),
    [
        (("    initial: DIALING\n", ""), 5, "compound state 'BUSY' has no initial child"),
        (
            ("    initial: DIALING\n", "    initial: RINGING\n"),
            6,
            "initial child 'RINGING' of 'BUSY'",
        ),
        (
            ("dest: BOTH.audio.live}", "dest: BOTH.chat.live}"),
            29,
            "parallel state 'BOTH' has no region 'chat'",
        ),
        (
            ("      - name: TALKING\n", "      - name: DIALING\n"),
            9,
            "duplicate state name 'BUSY.DIALING'",
        ),
        (
            (
                "        final: true\n  - name: BOTH",
                "  - name: BOTH",
                "  - {trigger: drop, source: BUSY, dest: DONE}\n",
                "",
            ),
            10,
            "'BUSY.HUNG_UP' is not final and has no way out",
        ),
        (
            ("  - {trigger: hang_up, source: BUSY.TALKING, dest: BUSY.HUNG_UP}\n", ""),
            10,
            "'BUSY.HUNG_UP' is unreachable",
        ),
        (
            (
                "  - name: DONE\n    final: true\n",
                "  - name: DONE\n    final: true\n    initial: X\n    states: [{name: X}]\n",
            ),
            22,
            "final state 'DONE' cannot have children",
        ),
    ],
    ids=[
        "no-initial",
        "bad-initial",
        "no-region",
        "duplicate-child",
        "trap-child",
        "unreachable-child",
        "final-children",
    ],
)
def test_rules_hold_at_every_level_with_file_and_line(
    tmp_path: Path, edit: tuple[str, ...], line: int, needle: str
) -> None:
    text = NESTED
    for old, new in zip(edit[::2], edit[1::2], strict=True):
        assert old in text
        text = text.replace(old, new)
    path = write(tmp_path, text)
    found = problems(path)
    match = [p for p in found if needle in p]
    assert match, found
    assert match[0].startswith(f"{path}:{line}:"), match[0]


def test_the_agent_step_example_extends_the_shipped_step_lifecycle() -> None:
    chart = load_chart(example("agent_step"))
    assert chart.spec.extends == "step"
    assert set(chart.top_states) == {s.value for s in StepStatus}
    assert "EXECUTING.WAITING_FOR_TOOL" in chart.states
    # Every transition of the shipped lifecycle is still there.
    assert chart.transitions_from("EXECUTING.SUMMARISING", "succeed")[0].dest == "COMPLETED"


BROKEN_EXTENSIONS = [
    ("  - name: PAUSED\n", "states", "cannot add the top-level state 'PAUSED'"),
    (
        "  - {trigger: pause, source: EXECUTING, dest: FAILED}\n",
        "transitions",
        "cannot add 'pause' from EXECUTING to FAILED",
    ),
    (
        "  - {trigger: succeed, source: EXECUTING, dest: COMPLETED, guards: [x]}\n",
        "transitions",
        "not guards",
    ),
]


@pytest.mark.parametrize(
    ("entry", "section", "needle"),
    BROKEN_EXTENSIONS,
    ids=["new-top-state", "cross-state", "guard-on-base"],
)
def test_a_broken_extension_is_rejected_precisely(
    tmp_path: Path, entry: str, section: str, needle: str
) -> None:
    text = (
        "chart: my_step\nextends: step\nstates:\n"
        "  - name: EXECUTING\n    initial: THINKING\n"
        "    states: [{name: THINKING}, {name: ACTING}]\n"
        "transitions:\n  - {trigger: act, source: EXECUTING.THINKING, dest: EXECUTING.ACTING}\n"
    )
    lines = text.splitlines(keepends=True)
    at = lines.index("transitions:\n") if section == "states" else len(lines)
    lines.insert(at, entry)
    path = write(tmp_path, "".join(lines))
    found = problems(path)
    match = [p for p in found if needle in p]
    assert match, found
    assert match[0].startswith(f"{path}:{at + 1}:"), match[0]


def test_an_extension_keeps_the_engine_states_reachable_and_its_own_checked(tmp_path: Path) -> None:
    text = (
        "chart: my_step\nextends: step\nstates:\n"
        "  - name: EXECUTING\n    initial: THINKING\n    states: [{name: THINKING}, {name: LOST}]\n"
    )
    path = write(tmp_path, text)
    found = problems(path)
    assert any(
        "'EXECUTING.LOST' is unreachable" in p and p.startswith(f"{path}:6:") for p in found
    ), found


def engine_for(tmp_path: Path) -> tuple[Engine, object]:
    definition = load_definition(example("agent_task"))
    engine = Engine(
        SQLiteStore(tmp_path / "agent.db"),
        InlineQueue(),
        step_chart=definition.step_chart(),
        heartbeat_interval=0,
    )
    return engine, definition


def test_the_engine_drives_a_step_through_its_sub_states(tmp_path: Path) -> None:
    engine, definition = engine_for(tmp_path)
    wf = engine.run(definition, {"topic": "sagas"})  # type: ignore[arg-type]
    assert wf.status is WorkflowStatus.COMPLETED
    path = [(h.trigger, h.dest) for h in wf.history if h.step == "research"]
    assert path == [
        ("schedule", "QUEUED"),
        ("dispatch", "EXECUTING.CALLING_MODEL"),
        ("tool_called", "EXECUTING.WAITING_FOR_TOOL"),
        ("tool_returned", "EXECUTING.CALLING_MODEL"),
        ("tool_called", "EXECUTING.WAITING_FOR_TOOL"),
        ("tool_returned", "EXECUTING.CALLING_MODEL"),
        ("summarise", "EXECUTING.SUMMARISING"),
        ("succeed", "COMPLETED"),
    ]
    assert wf.step("research").substate == []


def test_a_definition_on_another_step_lifecycle_is_refused_by_a_plain_engine(
    tmp_path: Path,
) -> None:
    definition = load_definition(example("agent_task"))
    plain = Engine(SQLiteStore(tmp_path / "plain.db"), InlineQueue(), heartbeat_interval=0)
    with pytest.raises(DefinitionError, match="runs on the step lifecycle 'agent_step'"):
        plain.start(definition)


class WorkerLost(Exception):
    """The worker running a job died at a probe's boundary."""


def lose_the_worker(boundary: str, job: Job) -> None:
    if boundary == "before_action":
        raise WorkerLost(job.description)


def test_recovery_resumes_a_step_lost_in_a_sub_state(tmp_path: Path) -> None:
    engine, definition = engine_for(tmp_path)
    wf = engine.start(definition, {"topic": "sagas"})  # type: ignore[arg-type]
    # A worker claims the step and reports a tool call, then dies (its job is never settled):
    # the crash probe stops it before its handler runs, and it reports the call itself.
    engine.probe = lose_the_worker
    with pytest.raises(WorkerLost):
        engine.run_job(Job(kind="step", workflow_id=wf.id, step="research", attempt=1))
    engine.probe = None
    engine.progress(wf.id, "research", 1, "tool_called", "search: sagas")
    lost = engine.store.get(wf.id).step("research")
    assert lost.status is StepStatus.EXECUTING and lost.substate == ["WAITING_FOR_TOOL"]
    # A progress trigger may not leave EXECUTING, and a stale attempt may not report.
    with pytest.raises(TransitionError, match="must keep the step inside EXECUTING"):
        engine.progress(wf.id, "research", 1, "succeed")
    with pytest.raises(StateError, match="attempt 7 is not running"):
        engine.progress(wf.id, "research", 7, "tool_returned")
    assert engine.store.get(wf.id).step("research").substate == ["WAITING_FOR_TOOL"]
    engine.resume(wf.id)
    resumed = engine.store.get(wf.id).step("research")
    assert resumed.status is StepStatus.RETRYING and resumed.substate == []
    timeout = [h for h in engine.store.get(wf.id).history if h.trigger == "time_out"]
    assert timeout[0].source == "EXECUTING.WAITING_FOR_TOOL"
    final = engine.wait(wf.id)
    assert final.status is WorkflowStatus.COMPLETED
    # The next attempt was told where the lost one got to.
    assert final.results["research"]["facts"][0] == "(resumed after a lost tool call)"


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_runs_a_saga_on_an_extended_step_lifecycle(tmp_path: Path, redis_url: str) -> None:
    import subprocess
    import sys
    import uuid

    from statesaga.adapters.queues.rq.queue import RQQueue

    queue_url = redis_url.replace("redis://", "rq://", 1) + f"?queue=agent-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "agent.db"
    definition = load_definition(example("agent_task"))
    engine = Engine(
        SQLiteStore(db), RQQueue.from_url(queue_url), step_chart=definition.step_chart()
    )
    wf = engine.start(definition, {"topic": "sagas"})
    worker = [
        sys.executable, "-m", "statesaga.cli", "worker", "--burst",
        "--queue", queue_url, "--store", f"sqlite:///{db}",
        "--handlers", "statesaga.examples.agent_handlers",
        "--step-chart", str(example("agent_step")),
    ]  # fmt: skip
    for _ in range(3):  # each burst runs what is queued; the next step is queued by the last
        done = subprocess.run(worker, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        if engine.get(wf.id).status is WorkflowStatus.COMPLETED:
            break
    final = engine.get(wf.id)
    assert final.status is WorkflowStatus.COMPLETED
    assert "EXECUTING.WAITING_FOR_TOOL" in [h.dest for h in final.history if h.step == "research"]
