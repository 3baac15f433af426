"""What `statesaga run`, `status` and `demo` show on a terminal: a step table and a
transition log, drawn from the stored document (so it works the same for in-process and
distributed queues)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .definition import WorkflowDefinition, load_definition
from .engine import Engine
from .models import HistoryEntry, StepStatus, WorkflowState, WorkflowStatus
from .plugins import DEFAULT_QUEUE, DEFAULT_STORE, open_queue, open_store

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


def store_url(url: str | None) -> str:
    return url or os.environ.get("STATESAGA_STORE") or DEFAULT_STORE


def queue_url(url: str | None) -> str:
    return url or os.environ.get("STATESAGA_QUEUE") or DEFAULT_QUEUE


def open_engine(
    store: str | None, queue: str | None, definition: WorkflowDefinition | None = None
) -> Engine:
    step_chart = definition.step_chart() if definition is not None else None
    return Engine(open_store(store_url(store)), open_queue(queue_url(queue)), step_chart=step_chart)


def _state(value: str) -> Text:
    return Text(value, style=COLOURS.get(value, ""))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def steps_table(wf: WorkflowState) -> Table:
    table = Table(title=f"{wf.name} {wf.id}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("status")
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
    table.caption = f"workflow: {wf.status.value}" + (f" - {wf.reason}" if wf.reason else "")
    return table


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
    """Prints each new history entry of one workflow as it is stored."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen = 0

    def __call__(self, wf: WorkflowState) -> None:
        for entry in wf.history[self.seen :]:
            self.console.print(describe(entry), overflow="ellipsis", no_wrap=True)
        self.seen = len(wf.history)


def run_with_progress(
    engine: Engine,
    definition: WorkflowDefinition,
    input: Mapping[str, Any],
    console: Console,
    *,
    session_id: str | None = None,
    timeout: float | None = None,
) -> WorkflowState:
    progress = Progress(console)
    started: list[str] = []

    def saved(wf: WorkflowState, entry: HistoryEntry) -> None:
        # Jobs run here (inline://) print as each save happens: with eager dispatch a whole
        # saga can be one job, so waiting for the queue's checks would print it all at the end.
        if started and wf.id == started[0] and len(wf.history) > progress.seen:
            progress(wf)

    engine.listeners.append(saved)
    try:
        wf = engine.start(definition, input, session_id=session_id)
        console.print(f"[bold]{definition.name}[/] v{definition.version}  {wf.id}")
        started.append(wf.id)
        final = engine.wait(wf.id, timeout, on_progress=progress)
    finally:
        engine.listeners.remove(saved)
    console.print(steps_table(final))
    return final


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
    from . import examples_dir

    console = console or Console()
    definition = load_definition(examples_dir() / "trip.yaml")
    engine = open_engine(store or "sqlite:///statesaga-demo.db", "inline://")
    console.rule("1. a trip that completes (the hotel's first attempt fails and is retried)")
    ok = run_with_progress(engine, definition, {**DEMO_INPUT, "flaky": "reserve_hotel"}, console)
    console.rule("2. the payment is refused: completed reservations are compensated in reverse")
    undone = run_with_progress(
        engine, definition, {**DEMO_INPUT, "fail_at": "charge_payment"}, console
    )
    order = [e.step for e in undone.history if e.trigger == "compensated" and e.step]
    console.print(f"compensation order: {' -> '.join(order)}")
    console.print(
        f"\n{ok.id}: {ok.status.value}    {undone.id}: {undone.status.value}    "
        f"(store: {store_url(store or 'sqlite:///statesaga-demo.db')}; "
        f"try `statesaga status {undone.id} --store ...`)"
    )
    good = ok.status is WorkflowStatus.COMPLETED and undone.status is WorkflowStatus.COMPENSATED
    return 0 if good else 1


def import_path_for(definition_file: str | Path) -> None:
    """Let a definition's handler modules live next to it or in the working directory."""
    for folder in (str(Path(definition_file).resolve().parent), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
