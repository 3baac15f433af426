"""The simulation's scheduler events, as a table of functions (`ACTIONS`): what a delivery,
a lost or duplicated job, a recovery scan, an operator's command, a signal, a clock jump or a
full disk does to one seed's run (statesaga.verify.simulation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StatesagaError, StoreFullError
from ..ports import Job
from .standins import pick

if TYPE_CHECKING:
    from .simulation import Simulation

#: Recovery's heartbeat timeout in the simulation (seconds of simulated time).
RECOVERY_TIMEOUT = 30.0


def job_name(job: Job) -> str:
    return f"{job.kind} {job.step}#{job.attempt}"


def errors_of(errors: dict[str, str]) -> str:
    return "".join(f"; error: {e}" for e in errors.values())


def deliver(sim: Simulation, duplicate: bool = False) -> None:
    due = sim.queue.due()
    if not due:
        sim._note("deliver", "nothing due")
        return
    p = sim.rng.choice(due) if not sim.healing else min(due, key=lambda p: p.seq)
    if not duplicate:
        sim.queue.pending.remove(p)
    sim._run(p.job, "duplicate" if duplicate else "deliver")


def duplicate(sim: Simulation) -> None:
    deliver(sim, duplicate=True)


def lose(sim: Simulation) -> None:
    p = sim.rng.choice(sim.queue.pending)
    sim.queue.pending.remove(p)
    sim._note("lose", job_name(p.job))


def stale(sim: Simulation) -> None:
    sim._run(sim.rng.choice(sim.queue.delivered), "stale")


def wait(sim: Simulation) -> None:
    due = sim.queue.next_due()
    if due is not None:
        sim.clock.advance_to(due)
    sim._note("wait", "until the next job is due")


def disk_full(sim: Simulation) -> None:
    sim.full_for = sim.rng.randint(1, 6)
    sim.store.refusing = True
    sim._note("disk full", f"every write refused for {sim.full_for} events")


def tick(sim: Simulation) -> None:
    sim.clock.advance(sim.rng.choice([1.0, 5.0, RECOVERY_TIMEOUT + 1]))
    sim._note("tick", "time passes")


def recover(sim: Simulation) -> None:
    if sim.healing:
        # A heartbeat written by a clock ahead of recovery's looks younger by the gap:
        # the lost attempt is taken that much later, never not at all.
        spread = max(sim.offsets.values()) - min(sim.offsets.values())
        sim.clock.advance(RECOVERY_TIMEOUT + 1 + spread)
    elif sim.rng.random() < 0.7:
        sim.clock.advance(RECOVERY_TIMEOUT + 1)
    try:
        with sim.on("recovery"):
            report = sim.recovery.run_once()
    except StoreFullError as exc:  # the pass ends; `recover --every` waits for space
        sim._note("recover", f"refused: {exc}")
        return
    sim._note("recover", f"resumed {len(report.resumed)}" + errors_of(report.errors))


def recover_cancel(sim: Simulation) -> None:
    sim.clock.advance(RECOVERY_TIMEOUT + 1)
    try:
        with sim.on("recovery"):
            report = sim.canceller.run_once()
    except StoreFullError as exc:
        sim._note("recover --cancel", f"refused: {exc}")
        return
    sim._note("recover --cancel", f"cancelled {len(report.cancelled)}" + errors_of(report.errors))


def cancel(sim: Simulation, force: bool = False) -> None:
    name = "cancel --force" if force else "cancel"
    try:
        with sim.on("operator"):
            sim.engine.cancel(sim.wf_id, force=force, by="operator")
    except StatesagaError as exc:
        sim._note(name, f"refused: {exc}")
        return
    sim._note(name, "accepted")


def force_cancel(sim: Simulation) -> None:
    cancel(sim, force=True)


def suspend(sim: Simulation) -> None:
    try:
        with sim.on("operator"):
            sim.engine.suspend(sim.wf_id, by="operator", reason="simulated")
    except StatesagaError as exc:
        sim._note("suspend", f"refused: {exc}")
        return
    sim._note("suspend", "accepted")


def signal(sim: Simulation) -> None:
    names = sim._signals()
    if not names:
        sim._note("signal", "no wait step")
        return
    name = sim.rng.choice(names) if not sim.healing else names[0]
    try:
        with sim.on("operator"):
            sim.engine.signal(sim.wf_id, name, {"by": "sim"}, by="approver")
    except StatesagaError as exc:
        sim._note(f"signal {name}", f"refused: {exc}")
        return
    sim._note(f"signal {name}", "accepted")


# -- the faults the stand-ins ask for (statesaga.verify.standins.Faults) -----------------
def action_fault(sim: Simulation, step: str, attempt: int) -> str:
    if step == sim.doomed:
        return "fail"
    if sim.healing:
        return "ok"
    r = sim.rates
    return pick(
        sim.rng,
        {
            "ok": 1 - r.fail - r.timeout - r.die_after_effect,
            "fail": r.fail,
            "timeout": r.timeout,
            "crash": r.die_after_effect,
        },
    )


def undo_fault(sim: Simulation, step: str) -> str:
    if sim.healing:
        return "ok"
    r = sim.rates
    return pick(sim.rng, {"ok": 1 - r.undo_fail - 0.03, "fail": r.undo_fail, "crash": 0.03})


def progress(sim: Simulation, step: str) -> list[str]:
    chart = sim.engine.step_chart
    if not chart.hierarchical or sim.rng.random() >= sim.rates.progress:
        return []
    triggers = sorted(
        {
            t.trigger
            for t in chart.chart.transitions
            if all(str(src).startswith("EXECUTING.") for src in t.source)
        }
    )
    return [sim.rng.choice(triggers) for _ in range(sim.rng.randint(1, 3))] if triggers else []


#: What each event of EVENTS (and `wait`, the healing's) does.
ACTIONS: dict[str, Callable[[Simulation], None]] = {
    "deliver": deliver,
    "duplicate": duplicate,
    "lose": lose,
    "stale": stale,
    "wait": wait,
    "disk_full": disk_full,
    "tick": tick,
    "recover": recover,
    "recover_cancel": recover_cancel,
    "cancel": cancel,
    "force_cancel": force_cancel,
    "suspend": suspend,
    "signal": signal,
}

__all__ = ["ACTIONS", "RECOVERY_TIMEOUT", "action_fault", "job_name", "progress", "undo_fault"]
