"""The running room of the CLI: commands for whoever runs workflows and looks at them (`run`,
`status`, `list`, `demo`, `simulate`), and the lines that show a workflow's state, which the
operating room prints too."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..app import EngineOptions, check_reachable, queue_url, store_url
from ..errors import StatesagaError
from ..models import WorkflowStatus
from .options import SECONDS, guard, handlers_option, load_input, queue_option, store_option


@click.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option("--input", "input_", default=None, help="JSON object, or @file.json")
@click.option("--session", default=None, help="session id to file the workflow under")
@store_option
@queue_option
@click.option("--json", "as_json", is_flag=True, help="print the final WorkflowState document")
@click.option("--timeout", type=SECONDS, default=None, help="give up waiting after S seconds")
@handlers_option
@guard
def run(
    definition: str,
    input_: str | None,
    session: str | None,
    store: str | None,
    queue: str | None,
    as_json: bool,
    timeout: float | None,
    handlers: tuple[str, ...],
) -> None:
    """Run a workflow definition to its end; exit 0 when COMPLETED, 1 otherwise."""
    from rich.console import Console

    from ..definitions.load import load_definition
    from ..models import WorkflowStatus
    from .console import Interrupted, run_with_progress

    data = load_input(input_)
    d = load_definition(definition)
    d.check_input(data)  # before any store or queue is opened
    engine = EngineOptions(
        store,
        queue,
        handlers=handlers,
        allow="operator",
        near=[Path(definition).parent],
        definition=d,
    ).build()
    # Everything that can refuse the run does before anything is created: its handlers
    # (known, allowed, importable), then the queue, and only then the store (made if new).
    engine.load(d)
    check_reachable(engine)
    console = Console(stderr=as_json, quiet=as_json)
    try:
        wf = run_with_progress(engine, d, data, console, session_id=session, timeout=timeout)
    except Interrupted as stop:
        _echo_left_running(stop.workflow, store, queue, "interrupted")
        sys.exit(130)
    if as_json:
        click.echo(wf.model_dump_json(indent=2))
    from ..engine import waiting_for_signal

    if waiting_for_signal(wf):  # a person must act (issue 11): say how, and leave it waiting
        echo_waiting(wf, err=as_json)
        sys.exit(0)
    if not engine.has_ended(wf.status.value) and wf.status is not WorkflowStatus.FAILED:
        _echo_left_running(wf, store, queue, f"--timeout {timeout:g}s reached")
    elif wf.status is WorkflowStatus.FAILED:
        echo_halted(wf, store, err=True)
    sys.exit(0 if wf.status is WorkflowStatus.COMPLETED else 1)


def _echo_left_running(wf: Any, store: str | None, queue: str | None, why: str) -> None:
    """`run` stopped waiting (a timeout, Ctrl+C) but the workflow goes on: say which one,
    what it waits for, and how to follow or cancel it."""
    from .console import follow_up, prog, waiting_on

    in_process = queue_url(queue).startswith("inline:")
    left = (
        f"stopped here: it resumes when `{prog()} recover` finds it"
        if in_process
        else "still runs on the workers"
    )
    click.echo(f"{why}: {wf.id} is {wf.status.value} and {left}", err=True)
    for line in waiting_on(wf):
        click.echo(f"  {line}", err=True)
    for line in follow_up(wf, store_url(store), None if in_process else queue_url(queue)):
        click.echo(f"  {line}", err=True)


def echo_halted(wf: Any, store: str | None, err: bool = False) -> None:
    """For a halted FAILED workflow: the `statesaga restart` that moves it on once fixed."""
    from .console import restart_hint

    hint = restart_hint(wf, store_url(store))
    if hint:
        click.echo(f"{wf.id} {hint}", err=err)


@click.command()
@click.argument("workflow_id")
@store_option
@click.option("--json", "as_json", is_flag=True, help="print the stored document")
@click.option("--history", is_flag=True, help="also print every transition")
@guard
def status(workflow_id: str, store: str | None, as_json: bool, history: bool) -> None:
    """Show one workflow: its status and its steps."""
    from rich.console import Console

    from .console import describe, retry_lines, steps_table

    wf = get_workflow(store, workflow_id)
    if as_json:
        click.echo(wf.model_dump_json(indent=2))
        return
    console = Console()
    console.print(steps_table(wf))
    for line in retry_lines(wf):
        console.print(line, soft_wrap=True, highlight=False)
    if history:
        for entry in wf.history:
            console.print(describe(entry), soft_wrap=not console.is_terminal)
    echo_halted(wf, store)


def get_workflow(store: str | None, workflow_id: str) -> Any:
    """The stored workflow; when it is not there, say which store was looked in."""
    from ..errors import AdapterError, NotFoundError
    from ..plugins import NoStoreError, open_existing_store
    from .console import DEMO_STORE, shown_url

    url = store_url(store)
    try:
        return open_existing_store(url).get(workflow_id)
    except (NotFoundError, AdapterError) as exc:
        if isinstance(exc, AdapterError) and not isinstance(exc, NoStoreError):
            raise
        empty = f": {exc}" if isinstance(exc, NoStoreError) else ""
        demo = "" if url == DEMO_STORE else f" (`statesaga demo` uses --store {DEMO_STORE})"
        raise StatesagaError(
            f"workflow {workflow_id} not found in {shown_url(url)}{empty}; give the store it "
            f"was run with: --store URL or STATESAGA_STORE{demo}"
        ) from None


@click.command(name="list")
@click.option("--session", default=None)
@click.option(
    "--status",
    "status_",
    default=None,
    type=click.Choice([s.value for s in WorkflowStatus], case_sensitive=False),
    help="only workflows in this status",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="at most N workflows (the first N shown)",
)
@click.option("--oldest", is_flag=True, help="oldest first (default: newest first)")
@store_option
@click.option("--json", "as_json", is_flag=True, help="one JSON summary per line")
@guard
def list_(
    session: str | None,
    status_: str | None,
    limit: int | None,
    oldest: bool,
    store: str | None,
    as_json: bool,
) -> None:
    """List workflows, newest first (--oldest: oldest first), filtered by session and/or
    status; --limit N keeps the first N in that order."""
    from ..plugins import open_existing_store
    from ..web.query import Filters, newest

    wanted = WorkflowStatus(status_.upper()) if status_ else None
    opened = open_existing_store(store_url(store))
    rows = (
        opened.list(session_id=session, status=wanted, limit=limit)
        if oldest
        else newest(opened, Filters(wanted, session), limit)
    )
    for wf in rows:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": wf.id,
                        "name": wf.name,
                        "version": wf.version,
                        "session_id": wf.session_id,
                        "status": wf.status.value,
                        "created_at": wf.created_at.isoformat(),
                        "updated_at": wf.updated_at.isoformat(),
                    }
                )
            )
        else:
            click.echo(
                f"{wf.id}  {wf.status.value:<13} {wf.name} v{wf.version}  {wf.session_id or ''}"
            )
    if report_unreadable(opened):
        sys.exit(1)


def report_unreadable(store: Any) -> bool:
    """Name each stored document the last listing skipped because it cannot be read."""
    unreadable = store.unreadable
    for workflow_id, why in unreadable.items():
        click.echo(f"error: stored workflow {workflow_id} cannot be read: {why}", err=True)
    return bool(unreadable)


@click.command()
@click.option("--store", default=None, help="store URL (default: sqlite:///statesaga-demo.db)")
@guard
def demo(store: str | None) -> None:
    """Run the trip-booking saga twice: one completes, one is compensated in reverse order."""
    from .console import demo as run_demo

    sys.exit(run_demo(store))


def echo_waiting(wf: Any, err: bool = False) -> None:
    """Say which signals the workflow waits for, and the command that sends each."""
    from ..models import StepStatus
    from .console import prog

    for s in wf.steps:
        if s.status is StepStatus.WAITING and s.kind == "wait":
            at = s.next_attempt_at
            due = f" (timeout at {at:%Y-%m-%d %H:%M:%S} UTC)" if at is not None else ""
            click.echo(
                f"{wf.id} step {s.name} waits for the signal {s.signal!r}{due}:\n"
                f"  {prog()} signal {wf.id} {s.signal} --payload '{_example_payload(s.payload)}'"
                + "".join(f" --handlers {m}" for m in wf.handlers),
                err=err,
            )


def _example_payload(schema: dict[str, Any] | None) -> str:
    """A payload the wait's `payload:` schema accepts, for the hint: its required values (a
    value the schema allows alone, such as an approval's hash, written out)."""
    if not schema:
        return json.dumps({"by": "NAME"})
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name in schema.get("required") or ["by"]:
        prop = props.get(name, {})
        enum = prop.get("enum")
        if enum and len(enum) == 1:
            out[name] = enum[0]
        else:
            out[name] = "NAME" if name == "by" else f"<{prop.get('type') or 'value'}>"
    return json.dumps(out)


# -- statesaga simulate (issue 15: deterministic simulation) ------------------------------------
@click.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option("--seeds", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=None, help="replay this one seed and print its trace")
@click.option("--input", "input_", default=None, help="JSON object, or @file.json")
@guard
def simulate(definition: str, seeds: int, seed: int | None, input_: str | None) -> None:
    """Explore a saga under simulated faults (crashes at every boundary, lost, duplicate and
    stale jobs, recovery scans, cancels, signals, timers), its handlers replaced by ledger
    stand-ins; check the invariants after every event. Prints the first failing trace and
    exits 1 if any seed breaks one."""
    from ..definitions.load import load_definition
    from ..verify.simulation import run_seeds
    from ..verify.simulation import simulate as simulate_seed

    if click.get_current_context().find_root().params.get("log_level") is None:
        # Simulated failures are the point, not news: the trace reports what matters.
        logging.getLogger("statesaga").setLevel(logging.ERROR)
    saga = load_definition(definition)
    data = load_input(input_)
    if seed is not None:
        result = simulate_seed(saga, seed, input=data)
        click.echo(result.report())
        sys.exit(0 if result.ok else 1)
    summary = run_seeds(saga, range(seeds), input=data)
    if summary.failed:
        first = summary.failed[0]
        click.echo(first.report())
        click.echo(f"replay it: statesaga simulate {definition} --seed {first.seed}")
    click.echo(f"{saga.name}: {summary.line()}")
    sys.exit(0 if summary.ok else 1)


COMMANDS: tuple[click.Command, ...] = (run, status, list_, demo, simulate)
