"""What `statesaga run`, `status` and `demo` show on a terminal: a step table and a
transition log, drawn from the stored document (so it works the same for in-process and
distributed queues)."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..app import EngineOptions
from ..definitions.load import WorkflowDefinition, load_definition
from ..engine import Engine
from ..models import HistoryEntry, StepStatus, WorkflowState, WorkflowStatus, halt_reason
from ..ports import Queue, WorkerQueue
from ..security.redact import redact
from ..vocabulary import WORKFLOW_OPEN


def prog() -> str:
    """`statesaga` as a hint should spell it: the name when the shell finds this very script
    by it, else the path it was started by (a virtual environment that is not activated, where
    `statesaga ...` would say "command not found")."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "statesaga":  # python -m statesaga.cli, or a test runner
        return "statesaga"
    found = shutil.which("statesaga")
    if found is not None and Path(found).resolve() == Path(argv0).resolve():
        return "statesaga"
    return shlex.quote(argv0)


COLOURS: Mapping[str, str] = {
    StepStatus.PENDING: "dim",
    StepStatus.QUEUED: "cyan",
    StepStatus.EXECUTING: "bold cyan",
    StepStatus.RETRYING: "yellow",
    StepStatus.WAITING: "bold yellow",
    StepStatus.COMPLETED: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.IN_DOUBT: "bold magenta",
    StepStatus.COMPENSATING: "magenta",
    StepStatus.COMPENSATED: "blue",
    StepStatus.COMPENSATION_FAILED: "bold red",
    StepStatus.SKIPPED: "dim",
    WorkflowStatus.RUNNING: "cyan",
    WorkflowStatus.COMPLETED: "bold green",
    WorkflowStatus.COMPENSATED: "bold blue",
    WorkflowStatus.FAILED: "bold red",
    WorkflowStatus.COMPENSATING: "magenta",
    WorkflowStatus.CANCELLED: "dim",
}


def _state(value: str) -> Text:
    return Text(value, style=COLOURS.get(value, ""))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def steps_table(wf: WorkflowState) -> Table:
    table = Table(title=f"{wf.name} {wf.id}", title_justify="left")
    # Folded, never cut with an ellipsis: piped into a log, every name and error is whole.
    table.add_column("#", justify="right")
    table.add_column("step", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("attempts", justify="right")
    table.add_column("result / error", overflow="fold")
    for i, s in enumerate(wf.steps, 1):
        if s.error is not None and s.status is not StepStatus.COMPLETED:
            detail = f"{s.error.type}: {s.error.message}"
        else:
            detail = "" if s.result is None else _compact(s.result)
        if s.compensation is not None and s.compensation.result is not None:
            detail += f"  undo: {_compact(s.compensation.result)}"
        name = s.name + (" (pivot)" if s.pivot else "")
        table.add_row(str(i), name, _state(s.status.value), str(s.attempts), detail)
    reason = halt_reason(wf) if wf.status is WorkflowStatus.FAILED else wf.reason
    table.caption = f"workflow: {wf.status.value}" + (f" - {reason}" if reason else "")
    return table


def retry_lines(wf: WorkflowState) -> list[str]:
    """The effective retry policies, one line per policy with the steps that share it."""
    shared: dict[str, list[str]] = {}
    for s in wf.steps:
        if s.kind == "action":
            shared.setdefault(f"retry {s.retry.summary()}", []).append(s.name)
        if s.compensation is not None:
            shared.setdefault(f"undo retry {s.compensation.retry.summary()}", []).append(s.name)
    return [f"{policy}: {', '.join(names)}" for policy, names in shared.items()]


def restart_hint(wf: WorkflowState, store: str) -> str | None:
    """For a halted FAILED workflow: the command that runs it again from the step that
    stopped it, once the cause is fixed."""
    if wf.status is not WorkflowStatus.FAILED:
        return None
    stuck = next(
        (s for s in wf.steps if s.status in (StepStatus.FAILED, StepStatus.COMPENSATION_FAILED)),
        None,
    )
    step = stuck.name if stuck is not None else "STEP"
    handlers = "".join(f" --handlers {m}" for m in wf.handlers)
    return (
        f"halted; once the cause is fixed: {prog()} restart {wf.id} --from {step} "
        f'--reason "WHAT WAS FIXED" --store {shlex.quote(shown_url(store))}{handlers}'
    )


def describe(entry: HistoryEntry) -> Text:
    what = entry.step or "(workflow)"
    line = Text(f"{entry.at:%H:%M:%S.%f}"[:-3] + f" {what:<18} {entry.trigger:<12} ")
    line.append_text(_state(entry.source))
    line.append(" → ")
    line.append_text(_state(entry.dest))
    if entry.detail:
        line.append(f"  {entry.detail}", style="dim")
    return line


class Progress:
    """Prints each new history entry of one workflow as it is stored; when nothing has
    happened for a while, says what the workflow waits for (a queued step no worker takes, a
    retry's backoff, a sleep), so a long wait is never silent."""

    #: Seconds of silence before the first "still waiting" line, then between two of them.
    QUIET = 5.0
    REPEAT = 30.0

    def __init__(self, console: Console, queue: Queue | None = None) -> None:
        self.console = console
        self.queue = queue
        self.seen = 0
        self.last = time.monotonic()
        self.quiet = self.QUIET

    def _print(self, text: Text | str) -> None:
        # On a terminal one line per entry; piped or logged, nothing is cut at 80 columns.
        if self.console.is_terminal:
            self.console.print(text, overflow="ellipsis", no_wrap=True)
        else:
            self.console.print(text, soft_wrap=True)

    def __call__(self, wf: WorkflowState) -> None:
        now = time.monotonic()
        # Counted with the folded entries: past the history limit the list stops growing,
        # but new entries are always at its end.
        total = wf.history_dropped + len(wf.history)
        new = min(total - self.seen, len(wf.history))
        for entry in wf.history[len(wf.history) - new :] if new > 0 else ():
            self._print(describe(entry))
            self.last, self.quiet = now, self.QUIET
        self.seen = total
        if now - self.last >= self.quiet and wf.status in _WAITING_ON:
            for line in waiting_on(wf, self.queue):
                self._print(Text(f"... {line}", style="dim"))
            self.last, self.quiet = now, self.REPEAT


_WAITING_ON = WORKFLOW_OPEN


def _in(at: datetime | None, word: str = "at") -> str:
    if at is None:
        return ""
    left = (at - datetime.now(UTC)).total_seconds()
    return f" {word} {at:%H:%M:%S} UTC (in {left:.0f}s)" if left > 0 else " (due now)"


def waiting_on(wf: WorkflowState, queue: Queue | None = None) -> list[str]:
    """What a workflow that is not moving waits for, one line per step in flight."""
    out = []
    for s in wf.steps:
        if s.status is StepStatus.QUEUED:
            out.append(f"step {s.name} is queued (attempt {s.attempts + 1}), waiting for a worker")
        elif s.status is StepStatus.RETRYING:
            out.append(
                f"step {s.name} failed attempt {s.attempts}, retries{_in(s.next_attempt_at)}"
            )
        elif s.status is StepStatus.WAITING and s.kind == "sleep":
            out.append(f"step {s.name} sleeps{_in(s.next_attempt_at, 'until')}")
        elif s.status is StepStatus.WAITING:
            out.append(f"step {s.name} waits for the signal {s.signal!r}")
        elif s.status is StepStatus.EXECUTING:
            out.append(f"step {s.name} is running (attempt {s.attempts})")
        elif s.status is StepStatus.COMPENSATING:
            out.append(f"step {s.name} is being compensated")
    if wf.status is WorkflowStatus.SUSPENDED:
        out.append(f"the workflow is SUSPENDED (its worker was lost): run `{prog()} recover`")
    if queue is not None and queue.worker_count() == 0:
        name = queue.name if isinstance(queue, WorkerQueue) else "?"
        out.append(f"no worker listens on queue {name!r}: {worker_hint()}")
    return out or [f"the workflow is {wf.status.value}"]


def worker_hint() -> str:
    return f"start one with `{prog()} worker --queue URL --store URL --handlers MODULE`"


def shown_url(url: str) -> str:
    """A URL as printed in a hint: without its password (in any form
    statesaga.security.redact knows)."""
    shown: str = redact(url)
    return shown


def follow_up(wf: WorkflowState, store: str, queue: str | None = None) -> list[str]:
    """The commands to watch or cancel a workflow left running, for this store (and queue)."""
    where = f" --store {shlex.quote(shown_url(store))}"
    also = f" --queue {shlex.quote(shown_url(queue))}" if queue else ""
    return [
        f"watch:  {prog()} status {wf.id}{where} --history",
        f"draw:   {prog()} diagram --instance {wf.id}{where}",
        f"cancel: {prog()} cancel {wf.id}{where}{also}",
    ]


def run_with_progress(
    engine: Engine,
    definition: WorkflowDefinition,
    input: Mapping[str, Any],
    console: Console,
    *,
    session_id: str | None = None,
    timeout: float | None = None,
) -> WorkflowState:
    progress = Progress(console, engine.queue)
    started: list[str] = []

    def saved(wf: WorkflowState, entry: HistoryEntry) -> None:
        # Jobs run here (inline://) print as each save happens: with eager dispatch a whole
        # saga can be one job, so waiting for the queue's checks would print it all at the end.
        if started and wf.id == started[0] and wf.history_dropped + len(wf.history) > progress.seen:
            progress(wf)

    # First among the listeners: a transition is shown before what other listeners log about
    # it (a failed step's WARNING comes after the line saying it failed, not before).
    engine.listeners.insert(0, saved)
    try:
        wf = engine.start(definition, input, session_id=session_id)
        console.print(f"[bold]{definition.name}[/] v{definition.version}  {wf.id}")
        started.append(wf.id)
        if not engine.queue.in_process:
            for line in waiting_on(wf, engine.queue)[-1:]:
                if line.startswith("no worker"):
                    console.print(f"[yellow]{line}[/]")
        try:
            final = engine.wait(wf.id, timeout, on_progress=progress)
        except KeyboardInterrupt:
            raise Interrupted(engine.get(wf.id)) from None
    finally:
        engine.listeners.remove(saved)
    console.print(steps_table(final))
    return final


class Interrupted(Exception):
    """Raised by run_with_progress on Ctrl+C, with the workflow as it was left."""

    def __init__(self, workflow: WorkflowState) -> None:
        super().__init__(workflow.id)
        self.workflow = workflow


DEMO_STORE = "sqlite:///statesaga-demo.db"
DEMO_INPUT = {
    "origin": "TPE",
    "destination": "NRT",
    "nights": 3,
    "amount": 1250,
    "email": "traveller@example.com",
}


def demo(store: str | None = None, console: Console | None = None) -> int:
    """The README's main job: one trip that completes (with a retried step), then one whose
    payment is refused, so the three reservations are cancelled in reverse order."""
    from ..resources import examples_dir

    console = console or Console()
    definition = load_definition(examples_dir() / "trip.yaml")
    engine = EngineOptions(store or DEMO_STORE, "inline://").build()
    console.rule("1. a trip that completes (the hotel's first attempt fails and is retried)")
    ok = run_with_progress(engine, definition, {**DEMO_INPUT, "flaky": "reserve_hotel"}, console)
    console.rule("2. the payment is refused: completed reservations are compensated in reverse")
    undone = run_with_progress(
        engine, definition, {**DEMO_INPUT, "fail_at": "charge_payment"}, console
    )
    order = [e.step for e in undone.history if e.trigger == "compensated" and e.step]
    console.print(f"compensation order: {' -> '.join(order)}")
    where = shlex.quote(shown_url(store or DEMO_STORE))
    console.print(f"\n{ok.id}: {ok.status.value}    {undone.id}: {undone.status.value}")
    console.print(f"the demo keeps its workflows in {where}; look at one with:", soft_wrap=True)
    console.print(f"  {prog()} status {undone.id} --store {where} --history", soft_wrap=True)
    console.print(f"  {prog()} diagram --instance {undone.id} --store {where}", soft_wrap=True)
    if prog() != "statesaga":
        console.print(
            "(or activate the environment first, `. .venv/bin/activate` in its folder, and "
            "type `statesaga ...`)",
            soft_wrap=True,
        )
    good = ok.status is WorkflowStatus.COMPLETED and undone.status is WorkflowStatus.COMPENSATED
    return 0 if good else 1
