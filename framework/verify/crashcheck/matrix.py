"""The crash matrix: run a saga again and again, SIGKILL the worker process at each boundary of
a job in turn, recover, and check that nothing was lost or applied twice.

For each scenario (a definition and an input) a first run records every boundary the jobs
pass; then every recorded boundary is one cell: a fresh store, a worker **process** that kills
itself with SIGKILL when it reaches that boundary (.process), then recovery (resume,
heartbeat timeout 0: the worker is known dead) and a fresh worker, and the checks:

- the workflow converges (statesaga.verify.invariants.judge_end, the judge `simulate` and the
  chaos tests use too) to an outcome the scenario expects (`Scenario.expect`, e.g. FAILED for
  a failure after the pivot), else to the one the uninterrupted run reached (COMPLETED or
  COMPENSATED), and nothing is left open or recoverable (no workflow stuck). Another outcome
  is correct when a lost attempt was a step's last one (it counted as an attempt: the saga
  unwinds), or was an attempt of the pivot that may have reached its handler (a failure of
  its retry halts FAILED, as the README says); a claimed pivot never reached is no such
  reason. Timers are fast-forwarded and the scenario's signals sent (.process);
- the side-effect ledger (.ledger) shows every action applied at most once, undone at most
  once, never undone without having been applied; on a COMPLETED workflow every ledgered
  action is applied, on a COMPENSATED one none is left.

Cells run side by side (threads, each waiting on its own processes), each with its own SQLite
file and, on RQ, its own queue name.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from ...models import WorkflowState, WorkflowStatus
from ...runtime.observe import waiting_for_signal
from ..invariants import judge_end, lost_attempt_changed_the_end
from .ledger import Ledger, check_ledger
from .plans import PLAN_RECORD, PlanRun, check_plan, check_scenario, read_record
from .process import BOUNDARIES, FINAL, BoundaryEvent, read_events, run_worker


@dataclass(frozen=True)
class Scenario:
    """A saga to crash: a definition file and its input; `name` labels the table rows.

    `expect` is the outcome, or the outcomes, correct for this input (COMPLETED, COMPENSATED
    or FAILED, e.g. FAILED for a failure after the pivot; a string, "A,B", or a collection).
    Without it the clean run must end COMPLETED or COMPENSATED, and each crash must end as the
    clean run did (or otherwise for a reason the saga gives, see the module's docstring).
    `signals` gives the payload to send to each wait step (by step name) when it waits.
    With `plan` (a PlanRun), `definition` is an agent's plan file (statesaga.plans), started
    instead of a saga, revised and its approvals answered as `plan` says (see .plans); its
    `handlers` are the plan's tools.
    """

    name: str
    definition: str
    input: Mapping[str, Any] = field(default_factory=dict)
    handlers: Sequence[str] = ()
    expect: str | Collection[str] | None = None
    signals: Mapping[str, Any] = field(default_factory=dict)
    plan: PlanRun | None = None

    def __post_init__(self) -> None:
        wrong = sorted(set(self.expected or ()) - _EXPECTABLE)
        if wrong or self.expected == frozenset():
            raise ValueError(
                f"scenario {self.name!r}: cannot expect {', '.join(wrong) or 'nothing'}; "
                f"expect one or more of {', '.join(sorted(_EXPECTABLE))}"
            )

    @property
    def expected(self) -> frozenset[str] | None:
        """The outcomes stated for this input, or None."""
        if self.expect is None:
            return None
        if isinstance(self.expect, str):
            return frozenset(e.strip() for e in self.expect.split(",") if e.strip())
        return frozenset(self.expect)


_EXPECTABLE = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})


@dataclass
class CellResult:
    """One cell's outcome: the boundary killed (None for the clean run) and what the checks
    found."""

    scenario: str
    event: BoundaryEvent | None
    killed: bool
    status: str
    expected: str
    problems: list[str] = field(default_factory=list)
    applies: int = 0
    repeats: int = 0
    undos: int = 0
    #: Why an outcome other than `expected` is correct (a lost attempt cost a retry).
    note: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Settings:
    """What every cell of one `check_crashes` call shares."""

    store: Callable[[Path], str]
    queue: Callable[[str], str]
    workdir: Path
    deadline: float
    ledger_scope: str


def _cell(
    settings: _Settings, scenario: Scenario, event: BoundaryEvent | None, expected: str | None
) -> tuple[CellResult, list[BoundaryEvent]]:
    """One run: start the saga in a worker that dies at `event` (None: a clean calibration run
    recording every boundary), then recover with a fresh worker, then check."""
    from ...plugins import open_store
    from ...runtime.recovery import get_recoverable_workflows

    tag = "clean" if event is None else f"{event.boundary}-{event.n}"
    celldir = settings.workdir / f"{scenario.name}-{tag}"
    celldir.mkdir(parents=True, exist_ok=True)
    store_url = settings.store(celldir)
    queue_url = settings.queue(f"crash-{uuid.uuid4().hex[:10]}")
    base = {
        "store": store_url,
        "queue": queue_url,
        "handlers": list(scenario.handlers),
        "deadline": settings.deadline,
        "signals": dict(scenario.signals),
        "saga": None if scenario.plan else scenario.definition,
        "clock": str(celldir / "clock"),
        "celldir": str(celldir),
        "plan_run": scenario.plan.as_spec() if scenario.plan else None,
    }
    record = celldir / "events.jsonl"
    first = dict(
        base,
        definition=None if scenario.plan else scenario.definition,
        plan=scenario.definition if scenario.plan else None,
        input=dict(scenario.input),
        kill_at=[event.boundary, event.n] if event else None,
        record=str(record),
    )
    deadline, scope = settings.deadline, settings.ledger_scope
    code = run_worker(celldir, first, "worker", deadline=deadline, ledger_scope=scope)
    killed = code == -signal.SIGKILL
    problems: list[str] = []
    if code not in (0, -signal.SIGKILL):
        problems.append(f"worker exited with {code} (see {celldir / 'worker.log'})")
    if event is not None and not killed:
        problems.append("the boundary was not reached (the worker was not killed)")
    events = read_events(record)  # the killed worker's: what its lost attempts reached
    if killed:
        again = dict(base, recover=True)
        code = run_worker(celldir, again, "recovery", deadline=deadline, ledger_scope=scope)
        if code != 0:
            problems.append(f"recovery worker exited with {code} (see {celldir / 'recovery.log'})")
    store = open_store(store_url)
    try:
        workflows = store.list()
        stuck = get_recoverable_workflows(store, 0.0)
    finally:
        store.close()
    status = "MISSING"
    if len(workflows) != 1:
        problems.append(f"{len(workflows)} workflows in the store, expected 1")
    if workflows:
        status = workflows[0].status.value
    problems.extend(f"{wf.id} still recoverable" for wf in stuck if wf.status in FINAL)
    records = Ledger(celldir / "ledger.jsonl").records()
    problems.extend(check_ledger(records, workflows))
    want = scenario.expected or (frozenset({expected}) if expected else None)
    reached = {(e.step, e.attempt) for e in events if e.boundary == "before_action"}
    note = None
    for wf in workflows:
        if scenario.plan is not None:
            problems.extend(check_plan(read_record(celldir / PLAN_RECORD), wf, scenario.plan))
        verdict = judge_end(wf, want, reached)
        note = verdict.note
        problems.extend(verdict.problems)
        if waiting_for_signal(wf):
            waits = [s.name for s in wf.steps if s.kind == "wait" and s.status.value == "WAITING"]
            problems.append(f"it waits for a signal nobody sends: give --signal {waits[0]}=PAYLOAD")
    if want is None and status in FINAL_STATUSES - _UNSTATED:
        problems.append(
            f"ended {status}, expected COMPLETED or COMPENSATED (if {status} is correct for "
            f"this input, say so: --expect {status})"
        )
    if scenario.plan is not None:
        # A plan's tools keep no ledger of their own: its effects are the recorded calls.
        calls = read_record(celldir / PLAN_RECORD)
        per_item = Counter(
            (r["workflow"], r["step"], r["op"]) for r in calls if r["op"] != "problem"
        )
        applies = sum(1 for (_, _, op) in per_item if op == "call")
        repeats = sum(n - 1 for n in per_item.values())
        undos = sum(1 for (_, _, op) in per_item if op == "undo")
    else:
        applies = sum(1 for r in records if r.op == "apply" and r.fresh)
        repeats = sum(1 for r in records if not r.fresh)
        undos = sum(1 for r in records if r.op == "undo" and r.fresh)
    result = CellResult(
        scenario=scenario.name,
        event=event,
        killed=killed,
        status=status,
        expected="|".join(sorted(want)) if want else status,
        problems=problems,
        applies=applies,
        repeats=repeats,
        undos=undos,
        note=note,
    )
    return result, events


#: The outcomes a clean run may reach without the user saying it should.
_UNSTATED = frozenset({WorkflowStatus.COMPLETED.value, WorkflowStatus.COMPENSATED.value})
FINAL_STATUSES = frozenset(s.value for s in FINAL)


def lost_attempt_cost_a_retry(wf: WorkflowState) -> str | None:
    """Why a crash run may correctly end otherwise than the clean run (see
    statesaga.verify.invariants.lost_attempt_changed_the_end); the note, or None."""
    return lost_attempt_changed_the_end(wf)


def _with_handlers(scenario: Scenario) -> Scenario:
    """Workers import an explicit list of handler modules: default to the definition's
    `handlers` hint, each of which must be on the operator's allow-list. The scenario's
    signals must name wait steps of the saga."""
    from ...definitions.load import load_definition
    from ...errors import RegistryError
    from ...security.allowlist import AllowList

    if scenario.plan is not None:
        if scenario.signals:
            raise ValueError(
                f"scenario {scenario.name!r}: a plan's approvals are answered by the matrix; "
                "it takes no signals"
            )
        check_scenario(scenario.definition, scenario.plan, scenario.handlers)
        return scenario
    saga = load_definition(scenario.definition)
    waits = [s.name for s in saga.steps if s.kind == "wait"]
    for name in scenario.signals:
        if name not in waits:
            raise ValueError(
                f"scenario {scenario.name!r}: a signal for {name!r}, which is not a wait step "
                f"of {saga.name} (its wait steps: {', '.join(waits) or 'none'})"
            )
    if scenario.handlers:
        return scenario
    allowed = AllowList.for_operator()
    hints = saga.spec.handlers
    refused = [hint for hint in hints if allowed.resolve(hint) is None]
    if refused:
        raise RegistryError(allowed.refusal(refused[0]))
    modules = tuple(str(allowed.resolve(hint)) for hint in hints)
    return replace(scenario, handlers=modules)


def _sqlite_store(celldir: Path) -> str:
    return f"sqlite:///{(celldir / 'store.db').resolve()}"


def _queue_factory(queue_url: str) -> Callable[[str], str]:
    """Each cell gets its own queue name on an RQ server, so cells can run side by side."""
    parts = urlsplit(queue_url)
    if parts.scheme == "inline":
        return lambda name: queue_url

    def named(name: str) -> str:
        query = parse_qs(parts.query)
        query["queue"] = [name]
        return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))

    return named


def _store_factory(store_url: str | None) -> Callable[[Path], str]:
    if store_url is None:
        return _sqlite_store
    if urlsplit(store_url).scheme == "memory":
        raise ValueError("the crash matrix needs a store shared between processes, not memory://")
    return lambda celldir: store_url


def check_crashes(
    scenarios: Sequence[Scenario],
    *,
    queue: str = "inline://",
    store: str | None = None,
    workdir: str | Path | None = None,
    boundaries: Iterable[str] = BOUNDARIES,
    parallel: int | None = None,
    deadline: float = 60.0,
    ledger_scope: str = "step",
    keep: bool = False,
) -> list[CellResult]:
    """Run every scenario clean, then once per boundary it passed, killed there.

    `store` None gives each cell its own SQLite file; a store URL given here is shared by
    every cell, so `parallel` is forced to 1 and each cell's workflow must be told apart, which
    the checks do not do: pass a URL only for a store that is emptied between runs.
    """
    wanted = set(boundaries)
    unknown = wanted - set(BOUNDARIES)
    if unknown:
        raise ValueError(f"unknown boundaries {sorted(unknown)}; known: {', '.join(BOUNDARIES)}")
    scenarios = [_with_handlers(s) for s in scenarios]
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="statesaga-crash-")) if own_dir else Path(str(workdir))
    settings = _Settings(
        store=_store_factory(store),
        queue=_queue_factory(queue),
        workdir=root,
        deadline=deadline,
        ledger_scope=ledger_scope,
    )
    workers = 1 if store is not None else (parallel or max(2, os.cpu_count() or 2))
    results: list[CellResult] = []
    try:
        with ThreadPoolExecutor(workers) as pool:
            clean = list(pool.map(lambda s: _cell(settings, s, None, None), scenarios))
            jobs = []
            for scenario, (baseline, events) in zip(scenarios, clean, strict=True):
                results.append(baseline)
                for event in events:
                    if event.boundary in wanted:
                        jobs.append((scenario, event, baseline.status))
            order = {b: i for i, b in enumerate(BOUNDARIES)}
            jobs.sort(key=lambda j: (scenarios.index(j[0]), order[j[1].boundary], j[1].n))
            for result, _ in pool.map(lambda j: _cell(settings, j[0], j[1], j[2]), jobs):
                results.append(result)
    finally:
        if own_dir and not keep and all(r.ok for r in results):
            shutil.rmtree(root, ignore_errors=True)
    return results


def trip_scenarios(
    handlers: Sequence[str] = ("statesaga.examples.ledger_handlers",),
) -> list[Scenario]:
    """The shipped trip saga: one run that completes and one that unwinds."""
    from importlib.resources import files

    path = str(files("statesaga.examples") / "trip.yaml")
    trip = {
        "origin": "CDG",
        "destination": "LIS",
        "nights": 3,
        "amount": 640,
        "email": "ada@example.org",
    }
    return [
        Scenario("trip", path, trip, tuple(handlers)),
        Scenario("trip-fails", path, dict(trip, fail_at="reserve_car"), tuple(handlers)),
    ]


__all__ = ["CellResult", "Scenario", "check_crashes", "lost_attempt_cost_a_retry", "trip_scenarios"]
