"""The `statesaga` command line. Exit codes: 0 ok, 1 a table is invalid or a workflow did not
complete, 2 usage errors (click's own convention)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from ._yaml import load_yaml_file
from .chart import chart_from_data, chart_json_schema
from .definition import definition_from_data, is_definition
from .errors import DefinitionError, StatesagaError


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="statesaga")
def main() -> None:
    """statesaga: durable workflows with saga compensation, as declarative state tables."""


def validate_file(path: str) -> Any:
    """Load a chart or a workflow definition (told apart by `chart:` / `workflow:`)."""
    data, lines = load_yaml_file(path)
    if is_definition(data):
        return definition_from_data(data, lines, path)
    return chart_from_data(data, lines, path)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(paths: tuple[str, ...]) -> None:
    """Validate state tables and workflow definitions; print every error as PATH:LINE: message."""
    bad = False
    for path in paths:
        try:
            validate_file(path)
        except DefinitionError as exc:
            bad = True
            for p in exc.problems:
                click.echo(str(p))
        else:
            click.echo(f"ok {path}")
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--definition", is_flag=True, help="the schema of workflow definitions instead")
def schema(definition: bool) -> None:
    """Print the JSON Schema of the chart YAML format (or of workflow definitions)."""
    if definition:
        from .definition import DefinitionSpec

        out = DefinitionSpec.model_json_schema()
        out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out["title"] = "statesaga workflow definition"
    else:
        out = chart_json_schema()
    click.echo(json.dumps(out, indent=2, sort_keys=True))


def _guard(func: Any) -> Any:
    """Show framework errors as one clean line instead of a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DefinitionError as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            sys.exit(1)
        except StatesagaError as exc:
            _fail(str(exc))

    return wrapper


def _load_input(value: str | None) -> dict[str, Any]:
    """`--input '{"a": 1}'` or `--input @file.json`."""
    if not value:
        return {}
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    return data


_store_option = click.option(
    "--store",
    "store",
    default=None,
    help="store URL (default: $STATESAGA_STORE or sqlite:///statesaga.db)",
)
_queue_option = click.option(
    "--queue", "queue", default=None, help="queue URL (default: $STATESAGA_QUEUE or inline://)"
)


@main.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option("--input", "input_", default=None, help="JSON object, or @file.json")
@click.option("--session", default=None, help="session id to file the workflow under")
@_store_option
@_queue_option
@click.option("--json", "as_json", is_flag=True, help="print the final WorkflowState document")
@click.option("--timeout", type=float, default=None, help="give up waiting after S seconds")
@_guard
def run(
    definition: str,
    input_: str | None,
    session: str | None,
    store: str | None,
    queue: str | None,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Run a workflow definition to its end; exit 0 when COMPLETED, 1 otherwise."""
    from rich.console import Console

    from .console import import_path_for, open_engine, run_with_progress
    from .definition import load_definition
    from .models import WorkflowStatus

    data = _load_input(input_)
    import_path_for(definition)
    d = load_definition(definition)
    engine = open_engine(store, queue, d)
    console = Console(stderr=as_json, quiet=as_json)
    wf = run_with_progress(engine, d, data, console, session_id=session, timeout=timeout)
    if as_json:
        click.echo(wf.model_dump_json(indent=2))
    from .engine import waiting_for_signal

    if waiting_for_signal(wf):  # a person must act (issue 11): say how, and leave it waiting
        _echo_waiting(wf, err=as_json)
        sys.exit(0)
    sys.exit(0 if wf.status is WorkflowStatus.COMPLETED else 1)


@main.command()
@click.argument("workflow_id")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="print the stored document")
@click.option("--history", is_flag=True, help="also print every transition")
@_guard
def status(workflow_id: str, store: str | None, as_json: bool, history: bool) -> None:
    """Show one workflow: its status and its steps."""
    from rich.console import Console

    from .console import describe, steps_table, store_url
    from .plugins import open_store

    wf = open_store(store_url(store)).get(workflow_id)
    if as_json:
        click.echo(wf.model_dump_json(indent=2))
        return
    console = Console()
    console.print(steps_table(wf))
    if history:
        for entry in wf.history:
            console.print(describe(entry))


@main.command(name="list")
@click.option("--session", default=None)
@click.option("--status", "status_", default=None, help="e.g. RUNNING, COMPENSATED")
@click.option("--limit", type=int, default=None)
@_store_option
@click.option("--json", "as_json", is_flag=True, help="one JSON summary per line")
@_guard
def list_(
    session: str | None, status_: str | None, limit: int | None, store: str | None, as_json: bool
) -> None:
    """List workflows, oldest first, filtered by session and/or status."""
    from .console import store_url
    from .models import WorkflowStatus
    from .plugins import open_store

    try:
        wanted = WorkflowStatus(status_.upper()) if status_ else None
    except ValueError:
        raise click.BadParameter(
            f"{status_!r}; one of {', '.join(s.value for s in WorkflowStatus)}",
            param_hint="--status",
        ) from None
    for wf in open_store(store_url(store)).list(session_id=session, status=wanted, limit=limit):
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


@main.command()
@click.option("--store", default=None, help="store URL (default: sqlite:///statesaga-demo.db)")
@_guard
def demo(store: str | None) -> None:
    """Run the trip-booking saga twice: one completes, one is compensated in reverse order."""
    from .console import demo as run_demo

    sys.exit(run_demo(store))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    default="mermaid",
    show_default=True,
    help="a renderer (mermaid, dot, svg, md, or a plugin's) or `all` (needs -o)",
)
@click.option("--detail", is_flag=True, help="charts: also effects and state descriptions")
@click.option(
    "-o",
    "--output",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="write NAME.EXT files here instead of printing",
)
@click.option("--instance", default=None, metavar="WF-ID", help="draw a stored workflow, live")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="store URL for --instance (default: $STATESAGA_STORE or sqlite:///statesaga.db)",
)
@click.option(
    "--view",
    type=click.Choice(["steps", "workflow"]),
    default="steps",
    show_default=True,
    help="--instance: the steps by status, or the workflow lifecycle with the path taken",
)
@click.option(
    "--step",
    "step_name",
    default=None,
    help="--instance: draw this step's lifecycle, its active (sub-)state and path taken",
)
@click.option(
    "--definition",
    "definition_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="--instance: the saga's definition (descriptions, and its own step lifecycle)",
)
@_guard
def diagram(
    paths: tuple[str, ...],
    fmt: str,
    detail: bool,
    out_dir: str | None,
    instance: str | None,
    store_url: str | None,
    view: str,
    step_name: str | None,
    definition_path: str | None,
) -> None:
    """Draw charts or workflow definitions (PATH...), or a stored workflow (--instance)."""

    from . import plugins
    from .diagram import Diagram, from_instance, from_loaded, get_renderer, renderer_names

    if bool(paths) == bool(instance):
        raise click.UsageError("give either PATH... or --instance WF-ID")
    names = renderer_names()
    if fmt != "all" and fmt not in names:
        raise click.BadParameter(
            f"{fmt!r}; one of {', '.join([*names, 'all'])}", param_hint="--format"
        )
    if fmt == "all" and out_dir is None:
        raise click.UsageError("--format all writes several files; give -o DIR")
    renderers = [get_renderer(n) for n in (names if fmt == "all" else [fmt])]

    todo: list[tuple[str, Diagram]] = []
    if instance:
        from .console import store_url as default_store

        wf = plugins.open_store(default_store(store_url)).get(instance)
        from .definition import load_definition

        d = load_definition(definition_path) if definition_path else None
        if step_name is not None:
            todo.append((f"{wf.id}.{step_name}", from_instance(wf, d, "step", step=step_name)))
        else:
            suffix = "" if view == "steps" else f".{view}"
            if view == "workflow":
                todo.append((f"{wf.id}{suffix}", from_instance(wf, d, "workflow")))
            else:
                todo.append((f"{wf.id}{suffix}", from_instance(wf, d, "steps")))
    else:
        for path in paths:
            todo.append((Path(path).stem, from_loaded(validate_file(path), detail=detail)))

    for name, drawing in todo:
        for r in renderers:
            content = r.render(drawing)
            if out_dir is None:
                if isinstance(content, bytes):
                    sys.stdout.buffer.write(content)
                else:
                    click.echo(content, nl=not content.endswith("\n"))
                continue
            target = Path(out_dir) / f"{name}.{r.extension}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8", newline="\n")
            click.echo(f"wrote {target}", err=True)


# -- statesaga worker (issue 5: distributed execution on RQ) -----------------------------------
@main.command()
@click.option(
    "--queue",
    "queue",
    default=None,
    help="rq:// queue URL (default: $STATESAGA_QUEUE or rq://127.0.0.1:6379/0?queue=statesaga)",
)
@click.option(
    "--store",
    "store",
    default=None,
    help="store URL shared by every worker (default: $STATESAGA_STORE or sqlite:///statesaga.db)",
)
@click.option(
    "--handlers",
    "handlers",
    multiple=True,
    metavar="MODULE",
    help="handler module to import (repeat it, or separate with commas); the only code run",
)
@click.option("--burst", is_flag=True, help="quit once the queue is empty")
@click.option(
    "--with-scheduler", is_flag=True, help="also move due delayed jobs (retries) onto the queue"
)
@click.option(
    "--heartbeat", type=float, default=5.0, show_default=True, help="seconds between heartbeats"
)
@click.option("--name", default=None, help="worker name (default: statesaga.HOST.PID.RANDOM)")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--step-chart",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="a step lifecycle that extends the shipped one (for sagas with `step_lifecycle:`)",
)
@click.option(
    "--eager/--no-eager",
    default=True,
    show_default=True,
    help="run the step a settle claims here at once (--no-eager: every step through the queue)",
)
@_guard
def worker(
    queue: str | None,
    store: str | None,
    handlers: tuple[str, ...],
    burst: bool,
    with_scheduler: bool,
    heartbeat: float,
    name: str | None,
    log_level: str,
    step_chart: str | None,
    eager: bool,
) -> None:
    """Run step and compensation jobs from an RQ queue (SIGTERM: finish the step, then exit)."""
    import os

    from .console import store_url
    from .worker import DEFAULT_WORKER_QUEUE, WorkerSettings, run_worker

    modules = [m.strip() for value in handlers for m in value.split(",") if m.strip()]
    sys.path.insert(0, os.getcwd())  # handler modules may live in the working directory
    run_worker(
        WorkerSettings(
            queue_url=queue or os.environ.get("STATESAGA_QUEUE") or DEFAULT_WORKER_QUEUE,
            store_url=store_url(store),
            handlers=modules,
            burst=burst,
            with_scheduler=with_scheduler,
            heartbeat=heartbeat,
            name=name,
            log_level=log_level.upper(),
            step_chart=step_chart,
            eager=eager,
        )
    )


@main.command()
@click.option("--group", "groups", multiple=True, help="only this entry-point group (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per plugin")
@click.option("--strict", is_flag=True, help="exit 1 when a plugin fails to load")
def plugins(groups: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """List installed plugins (group, name, module, version); report any that fail to load."""
    from dataclasses import asdict

    from .plugins import installed

    found = [p for p in installed() if not groups or p.group in groups]
    broken = [p for p in found if p.error]
    if as_json:
        for p in found:
            click.echo(json.dumps(asdict(p), sort_keys=True))
    else:
        rows = [
            (p.group, p.name, p.value or p.module, p.version or "-", p.error or "ok") for p in found
        ]
        header = ("GROUP", "NAME", "MODULE", "VERSION", "STATUS")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
            click.echo("  ".join([*cells, row[4]]))
    if broken:
        # A broken third-party plugin must not hide the others: report it and go on.
        names = ", ".join(f"{p.group}:{p.name}" for p in broken)
        click.echo(f"{len(broken)} plugin(s) failed to load: {names}", err=True)
    sys.exit(1 if broken and strict else 0)


# -- statesaga recover / cancel / check-crashes (issue 7: recovery, cancel, crash matrix) ------
def _recovery_engine(store: str | None, queue: str | None, handlers: tuple[str, ...]) -> Any:
    """An engine for recovery commands: with `inline://` this process runs the jobs itself,
    so it needs the handler modules (an explicit allow-list, as for `statesaga worker`)."""
    import os

    from .console import queue_url, store_url
    from .engine import Engine
    from .plugins import open_queue, open_store
    from .registry import Registry

    sys.path.insert(0, os.getcwd())  # handler modules may live in the working directory
    registry = Registry()
    for module in (m.strip() for value in handlers for m in value.split(",") if m.strip()):
        registry.register_module(module)
    return Engine(open_store(store_url(store)), open_queue(queue_url(queue)), registry)


def _run_inline(engine: Any, ids: list[str], timeout: float | None) -> None:
    """With an in-process queue the re-enqueued jobs run here, until those workflows end."""
    from .models import ACTIVE_WORKFLOW

    if not ids or not getattr(engine.queue, "in_process", False):
        return
    engine.queue.drain(
        lambda: all(engine.store.get(i).status not in ACTIVE_WORKFLOW for i in ids), timeout
    )


_handlers_option = click.option(
    "--handlers",
    "handlers",
    multiple=True,
    metavar="MODULE",
    help="handler modules, for the jobs this process runs itself (inline:// queue)",
)


@main.command()
@_store_option
@_queue_option
@_handlers_option
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="a workflow whose heartbeat is older than S seconds is taken as lost",
)
@click.option(
    "--resume/--cancel",
    "resume",
    default=True,
    help="resume lost workflows (default) or cancel them (compensate at once)",
)
@click.option("--once", "every", flag_value=0.0, default=True, help="scan once (default)")
@click.option("--every", "every", type=float, help="scan every S seconds until interrupted")
@click.option("--session", default=None, help="only the workflows of this session")
@_guard
def recover(
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
    timeout: float,
    resume: bool,
    every: float | bool,
    session: str | None,
) -> None:
    """Find workflows whose worker was lost (stale heartbeat, or SUSPENDED) and resume or
    cancel them; their lost jobs are re-enqueued from what the store says is in flight."""
    from .recovery import Recovery, RecoveryAction

    engine = _recovery_engine(store, queue, handlers)
    recovery = Recovery(
        engine, timeout=timeout, action=RecoveryAction.RESUME if resume else RecoveryAction.CANCEL
    )
    interval = 0.0 if every is True else float(every)
    while True:
        report = recovery.run_once(session)
        for wf_id in report.resumed:
            click.echo(f"resumed {wf_id}")
        for wf_id in report.cancelled:
            click.echo(f"cancelled {wf_id}")
        for wf_id, why in report.errors.items():
            click.echo(f"skipped {wf_id}: {why}", err=True)
        _run_inline(engine, report.resumed + report.cancelled, None)
        if interval <= 0:
            if not report.handled and not report.errors:
                click.echo("nothing to recover")
            return
        import time

        time.sleep(interval)


@main.command()
@click.argument("workflow_id")
@click.option("--force", is_flag=True, help="compensate at once; a late result is undone too")
@_store_option
@_queue_option
@_handlers_option
@_guard
def cancel(
    workflow_id: str,
    force: bool,
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
) -> None:
    """Cancel a workflow: the step in flight finishes, nothing new starts, completed steps are
    compensated in reverse. A finished workflow cannot be cancelled (exit 1)."""
    engine = _recovery_engine(store, queue, handlers)
    wf = engine.cancel(workflow_id, force=force, by="cli")
    click.echo(f"{wf.id} {wf.status.value}")
    _run_inline(engine, [wf.id], None)
    final = engine.get(workflow_id)
    if final.status is not wf.status:
        click.echo(f"{final.id} {final.status.value}")


@main.command(name="check-crashes")
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--input",
    "inputs",
    multiple=True,
    help="JSON object or @file.json; repeat for several scenarios",
)
@click.option(
    "--queue",
    "queue",
    default="inline://",
    show_default=True,
    help="inline:// or rq://host:port/db (each run gets its own queue name)",
)
@click.option(
    "--store", "store", default=None, help="shared store URL (default: a fresh SQLite file per run)"
)
@click.option(
    "--handlers",
    "handlers",
    multiple=True,
    metavar="MODULE",
    help="handler modules the workers import (default: the definition's)",
)
@click.option(
    "--boundary", "boundaries", multiple=True, help="only these boundaries (default: all)"
)
@click.option("--parallel", type=int, default=None, help="runs side by side")
@click.option("--keep", is_flag=True, help="keep the run directories (stores, ledgers, logs)")
@click.option(
    "--expect",
    "expects",
    multiple=True,
    type=click.Choice(["COMPLETED", "COMPENSATED", "FAILED"]),
    help="the correct outcome, one per --input in order (or one for all), e.g. FAILED for a "
    "failure after the pivot",
)
@_guard
def check_crashes_command(
    definition: str,
    inputs: tuple[str, ...],
    expects: tuple[str, ...],
    queue: str,
    store: str | None,
    handlers: tuple[str, ...],
    boundaries: tuple[str, ...],
    parallel: int | None,
    keep: bool,
) -> None:
    """Run a saga with its worker process SIGKILLed at every job boundary in turn, recover,
    and check it converges with each side effect applied at most once; print the table."""
    from .crashcheck import BOUNDARIES, Scenario, check_crashes, format_table

    name = Path(definition).stem
    modules = tuple(m.strip() for value in handlers for m in value.split(",") if m.strip())
    runs = inputs or ("",)
    if len(expects) not in (0, 1, len(runs)):
        raise click.BadParameter(
            f"{len(expects)} given for {len(runs)} --input: give one per --input, or one for all",
            param_hint="--expect",
        )
    wanted: list[str | None] = [None] * len(runs)
    if expects:
        wanted = [*expects] * len(runs) if len(expects) == 1 else [*expects]
    scenarios = [
        Scenario(
            f"{name}-{i}" if len(inputs) > 1 else name,
            str(Path(definition).resolve()),
            _load_input(value),
            modules,
            expect,
        )
        for i, (value, expect) in enumerate(zip(runs, wanted, strict=True), 1)
    ]
    results = check_crashes(
        scenarios,
        queue=queue,
        store=store,
        boundaries=boundaries or BOUNDARIES,
        parallel=parallel,
        keep=keep,
    )
    click.echo(format_table(results))
    sys.exit(0 if all(r.ok for r in results) else 1)


# -- statesaga signal / restart / check-upgrade (issue 11: people and time in the loop) ----------
def _payload(value: str | None) -> Any:
    """`--payload '{"by": "alice"}'` or `--payload @file.json`: any JSON value."""
    if value is None:
        return None
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None


def _run_until_waiting(engine: Any, workflow_id: str) -> Any:
    """With an in-process queue the jobs a command enqueued run here, until the workflow ends
    or waits for a signal again; with workers elsewhere, the stored document as it is."""
    if getattr(engine.queue, "in_process", False):
        return engine.wait(workflow_id)
    return engine.get(workflow_id)


@main.command()
@click.argument("workflow_id")
@click.argument("name")
@click.option("--payload", default=None, help="JSON value (the step's result), or @file.json")
@click.option("--by", default=None, help="who sends it (kept in the history)")
@_store_option
@_queue_option
@_handlers_option
@_guard
def signal(
    workflow_id: str,
    name: str,
    payload: str | None,
    by: str | None,
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
) -> None:
    """Send the signal NAME to a workflow (e.g. `approve`); the step waiting for it completes
    with the payload as its result. A signal sent before the step waits is kept for it; one
    to a finished workflow, or that no step waits for, is an error (exit 1)."""
    import getpass

    data = _payload(payload)
    engine = _recovery_engine(store, queue, handlers)
    current = engine.get(workflow_id)
    if not engine.has_ended(current.status.value):  # an ended one: signal() says why
        _require_handlers(engine, current)
    sender = by or (data.get("by") if isinstance(data, dict) else None) or getpass.getuser()
    wf = engine.signal(workflow_id, name, data, by=str(sender))
    click.echo(f"{wf.id} {name} sent ({wf.status.value})")
    final = _run_until_waiting(engine, workflow_id)
    _echo_waiting(final)
    if final.revision != wf.revision:
        click.echo(f"{final.id} {final.status.value}")


def _require_handlers(engine: Any, wf: Any) -> None:
    """With an in-process queue this command runs the steps it sets going, so their handler
    modules must be on the allow-list (`--handlers`): a module is never imported because a
    stored document names it."""
    if not getattr(engine.queue, "in_process", False):
        return  # workers elsewhere run the jobs, with their own allow-list
    missing = sorted(
        {
            action
            for s in wf.steps
            for action in (s.action_type, s.compensation.action_type if s.compensation else None)
            if action and not engine.registry.has_handler(action)
        }
    )
    if missing:
        hint = " ".join(f"--handlers {m}" for m in wf.handlers) or "--handlers MODULE"
        raise click.UsageError(
            f"{wf.id} runs in this process (inline queue) and needs the handlers "
            f"{', '.join(missing)}; pass {hint}"
        )


def _echo_waiting(wf: Any, err: bool = False) -> None:
    """Say which signals the workflow waits for, and the command that sends each."""
    from .models import StepStatus

    for s in wf.steps:
        if s.status is StepStatus.WAITING and s.kind == "wait":
            at = s.next_attempt_at
            due = f" (timeout at {at:%Y-%m-%d %H:%M:%S} UTC)" if at is not None else ""
            click.echo(
                f"{wf.id} step {s.name} waits for the signal {s.signal!r}{due}:\n"
                f'  statesaga signal {wf.id} {s.signal} --payload \'{{"by": "NAME"}}\''
                + "".join(f" --handlers {m}" for m in wf.handlers),
                err=err,
            )


@main.command()
@click.argument("workflow_id")
@click.option("--from", "from_step", required=True, metavar="STEP", help="the step to re-run")
@click.option("--reason", required=True, help="why (kept in the history)")
@click.option("--by", default=None, help="who restarts it (default: the current user)")
@_store_option
@_queue_option
@_handlers_option
@_guard
def restart(
    workflow_id: str,
    from_step: str,
    reason: str,
    by: str | None,
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
) -> None:
    """Re-run a FAILED workflow from STEP (e.g. after fixing a bug): the steps before it keep
    their results; it and the steps after it run again. Exit 0 when it completes (or waits
    for a signal, or runs on workers elsewhere), 1 otherwise."""
    import getpass

    from .models import WorkflowStatus

    engine = _recovery_engine(store, queue, handlers)
    current = engine.get(workflow_id)
    if current.status is WorkflowStatus.FAILED:  # anything else: restart() says why not
        _require_handlers(engine, current)
    wf = engine.restart(workflow_id, from_step, reason=reason, by=by or getpass.getuser())
    click.echo(f"{wf.id} restarted from {from_step} ({wf.status.value})")
    final = _run_until_waiting(engine, workflow_id)
    _echo_waiting(final)
    click.echo(f"{final.id} {final.status.value}")
    sys.exit(0 if final.status in (WorkflowStatus.COMPLETED, WorkflowStatus.RUNNING) else 1)


@main.command(name="check-upgrade")
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@_store_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per instance")
@_guard
def check_upgrade_command(definition: str, store: str | None, as_json: bool) -> None:
    """Can the in-flight instances of an older version continue under DEFINITION? Lists each
    (its current step must still exist; its completed steps must keep their compensations);
    exit 1 if any cannot."""
    from .console import store_url
    from .definition import load_definition
    from .plugins import open_store
    from .versions import check_upgrade

    new = load_definition(definition)
    checks = check_upgrade(open_store(store_url(store)), new)
    blocked = [c for c in checks if not c.ok]
    for c in checks:
        if as_json:
            click.echo(json.dumps(c.to_dict(), sort_keys=True))
            continue
        where = ", ".join(c.current) or "-"
        verdict = "ok" if c.ok else "CANNOT continue"
        click.echo(f"{c.workflow_id} v{c.version} {c.status} at {where}: {verdict}")
        for p in c.problems:
            click.echo(f"    {p}")
    if not as_json:
        click.echo(
            f"{len(checks)} in-flight instance(s) of {new.name} on other versions; "
            f"{len(blocked)} cannot continue under v{new.version}"
        )
    sys.exit(1 if blocked else 0)


# -- statesaga simulate (issue 15: deterministic simulation) ------------------------------------
@main.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option("--seeds", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=None, help="replay this one seed and print its trace")
@click.option("--input", "input_", default=None, help="JSON object, or @file.json")
@_guard
def simulate(definition: str, seeds: int, seed: int | None, input_: str | None) -> None:
    """Explore a saga under simulated faults (crashes at every boundary, lost, duplicate and
    stale jobs, recovery scans, cancels, signals, timers), its handlers replaced by ledger
    stand-ins; check the invariants after every event. Prints the first failing trace and
    exits 1 if any seed breaks one."""
    from .definition import load_definition
    from .simulation import run_seeds
    from .simulation import simulate as simulate_seed

    saga = load_definition(definition)
    data = _load_input(input_)
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


__all__ = ["main"]

if __name__ == "__main__":
    main()
