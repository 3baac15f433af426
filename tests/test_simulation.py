"""The deterministic simulation (statesaga.verify.simulation): thousands of seeds of the shipped
examples and of sagas with parallel branches, steps without compensation, a pivot, steps
without compensation after it, retries, waits, sleeps and a nested step chart converge with
every invariant held; a seed replays exactly; and the simulation does catch a defective
engine (the compensation order and in-doubt handling of before issue 15).

A longer run: `statesaga simulate tests/sagas/chaos.yaml --seeds 100000` (about 40 minutes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from statesaga import Registry
from statesaga.definitions.load import load_definition
from statesaga.models import CompensationStrategy, StepStatus
from statesaga.ports import Job
from statesaga.verify.simulation import Rates, Simulation, run_seeds, simulate
from statesaga.verify.standins import SimCrash
from statesaga.vocabulary import STEP_APPLYING as _BUSY
from statesaga.vocabulary import STEP_NOT_STARTED as _NOT_STARTED

ROOT = Path(__file__).resolve().parent.parent
SAGAS = {
    "trip": ROOT / "examples" / "trip.yaml",
    "expense": ROOT / "examples" / "expense.yaml",
    "agent_task (nested step chart)": ROOT / "examples" / "agent_task.yaml",
    "chaos (parallel fetches, pivot, retries after it)": ROOT / "tests" / "sagas" / "chaos.yaml",
    "waits (signals, sleeps, timeouts)": ROOT / "tests" / "sagas" / "waits.yaml",
    "fanout (parallel strategy, diamond)": ROOT / "tests" / "sagas" / "fanout.yaml",
    "forward (forward_retry)": ROOT / "tests" / "sagas" / "forward.yaml",
}
SEEDS = 500  # per saga: 3,500 in all; the file takes about 40 s on one core


@pytest.mark.parametrize("path", list(SAGAS.values()), ids=list(SAGAS))
@pytest.mark.slow
def test_every_seed_converges_with_every_invariant_held(path: Path) -> None:
    summary = run_seeds(load_definition(path), range(SEEDS))
    assert summary.ok, summary.failed[0].report()
    assert summary.ran == SEEDS
    # The seeds explore both ways out, not one path over and over.
    assert summary.outcomes["COMPENSATED"] > SEEDS // 20, summary.line()
    assert summary.outcomes["COMPLETED"] > SEEDS // 20, summary.line()


@pytest.mark.slow
def test_eager_dispatch_keeps_every_invariant() -> None:
    """The settle of a step claims the next one in the same save (Engine(eager=True))."""
    summary = run_seeds(load_definition(SAGAS["trip"]), range(SEEDS // 2), eager=True)
    assert summary.ok, summary.failed[0].report()


def test_a_seed_replays_exactly() -> None:
    saga = load_definition(SAGAS["chaos (parallel fetches, pivot, retries after it)"])
    first, again, other = simulate(saga, 42), simulate(saga, 42), simulate(saga, 43)
    assert first.trace == again.trace and first.status == again.status
    assert first.trace != other.trace
    assert any("worker died" in line for seed in range(20) for line in simulate(saga, seed).trace)


def _old_compensate(ctx: Any) -> None:
    """The compensate effect before issue 15: completed steps only (a step whose outcome is
    unknown was left as it was), in reverse completion order whatever depends on what."""
    wf = ctx.workflow
    for step in wf.steps:
        if step.status in _NOT_STARTED:
            ctx.fire_step(step, "skip", "the saga is unwinding")
    completed = sorted(
        (s for s in wf.steps if s.status is StepStatus.COMPLETED),
        key=lambda s: (s.completed_at is not None, s.completed_at),
        reverse=True,
    )
    undoing = any(s.status is StepStatus.COMPENSATING for s in wf.steps)
    if wf.strategy is CompensationStrategy.PARALLEL:
        for step in completed:
            ctx.fire_step(step, "compensate")
    elif completed and not undoing:
        ctx.fire_step(completed[0], "compensate")
    if not completed and not any(s.status in _BUSY for s in wf.steps):
        ctx.then("compensated")


@pytest.mark.slow
def test_the_simulation_catches_the_old_compensation() -> None:
    registry = Registry()
    registry.register_effect("compensate", _old_compensate)
    saga = load_definition(SAGAS["chaos (parallel fetches, pivot, retries after it)"])
    summary = run_seeds(saga, range(40), stop_at_first=False, registry=registry)
    problems = [p for result in summary.failed for p in result.problems]
    assert any("reverse dependency order" in p for p in problems)
    assert any(p.startswith("did not converge: still COMPENSATING") for p in problems)
    report = summary.failed[0].report()
    assert f"seed {summary.failed[0].seed}:" in report and "VIOLATION:" in report


@pytest.mark.slow
def test_cli_simulate(tmp_path: Path) -> None:
    saga = str(SAGAS["fanout (parallel strategy, diamond)"])
    out = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "simulate", saga, "--seeds", "60"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("fanout: 60 seeds: every invariant held (")
    one = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "simulate", saga, "--seed", "7"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert one.returncode == 0
    assert one.stdout.startswith("seed 7: ") and "every invariant held" in one.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: x\nsteps: []\n")
    out = subprocess.run(
        [sys.executable, "-m", "statesaga.cli", "simulate", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "bad.yaml" in out.stderr and out.stdout == ""


@pytest.mark.slow
def test_the_simulation_catches_a_claimed_pivot_taken_for_a_started_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before issue 28 the settle of a step claimed the next one whatever it was, so a worker
    dying right after that save left the pivot (or a step without compensation) in doubt with
    its handler never called: the saga halted where it could have unwound."""
    import statesaga.runtime.jobs as jobs

    monkeypatch.setattr(jobs, "doubt_is_harmless", lambda wf, step: True)  # the old claim
    summary = run_seeds(load_definition(SAGAS["trip"]), range(200), stop_at_first=False)
    problems = {p for result in summary.failed for p in result.problems}
    assert (
        "charge_payment is in doubt, but no attempt of it reached its handler: "
        "claimed is not started"
    ) in problems


class _DiesOnceAfterSaving(Simulation):
    """No faults but one: the worker dies after the save that settles `step` (and holds the
    next step for its own claim), before anything else runs."""

    def __init__(self, *args: Any, step: str, **kw: Any) -> None:
        super().__init__(*args, rates=Rates(0, 0, 0, 0, 0, 0, 0, 0), **kw)
        self.dies_after = step

    def _probe(self, boundary: str, job: Job) -> None:
        super()._probe(boundary, job)
        if (boundary, job.step, job.kind) == ("after_save", self.dies_after, "step"):
            self.dies_after = ""
            raise SimCrash("at after_save")


@pytest.mark.parametrize(
    ("doomed", "end"), [(None, "COMPLETED"), ("charge_payment", "COMPENSATED")]
)
def test_an_eager_claimed_pivot_whose_worker_died_before_the_call_completes_or_unwinds(
    doomed: str | None, end: str
) -> None:
    """Issue 28: the worker dies right after the save that settles reserve_car, the step
    before the pivot. Recovery runs the pivot again (its attempt was never spent); when the
    pivot then fails, the saga unwinds instead of halting FAILED."""
    saga = load_definition(SAGAS["trip"])
    sim = _DiesOnceAfterSaving(saga, 0, step="reserve_car")
    sim.doomed = doomed
    result = sim.run()
    assert result.ok, result.report()
    assert any("worker died: at after_save" in line for line in result.trace), result.report()
    assert result.status == end, result.report()
    pivot = sim.engine.store.get(sim.wf_id).step("charge_payment")
    assert not pivot.in_doubt
