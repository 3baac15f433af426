"""The `statesaga` command line. Exit codes: 0 ok, 1 a table is invalid, a store or queue
cannot be reached or read, or a workflow did not complete, 2 usage errors (click's own
convention), including an input that is not JSON or does not fit the definition."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from .._yaml import load_yaml_file
from ..charts.chart import chart_from_data, chart_json_schema
from ..definition import definition_from_data, is_definition
from ..errors import DefinitionError, StatesagaError
from ..models import WorkflowStatus
from ..observability.logs import (
    LOG_FORMATS,
    LOG_LEVELS,
    LogFormat,
    configure_logging,
    set_level,
)
from ..resources import __version__


def _fail(message: str, code: int = 1) -> None:
    from ..security.redact import redact

    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


_handlers_option = click.option(
    "--handlers",
    "handlers",
    multiple=True,
    metavar="MODULE",
    help="allow this handler module (repeat it, or separate with commas; default: "
    "$STATESAGA_HANDLERS); also allowed: [tool.statesaga] handlers in ./pyproject.toml and "
    "installed packages' statesaga.handlers entry points. Nothing else is imported.",
)


def _allowed(handlers: tuple[str, ...], near: str | None = None) -> Any:
    """The operator's allow-list (statesaga.security.allowlist) and a registry holding the
    handlers of the modules the operator named (found installed, in the working directory,
    or `near`)."""
    from ..registry import Registry
    from ..security.allowlist import AllowList

    allowed = AllowList.for_operator(handlers)
    registry = Registry()
    allowed.load_eager(registry, [Path(near).parent] if near else [])
    return allowed, registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="statesaga")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    envvar="STATESAGA_LOG_LEVEL",
    help="log records at this level and above go to stderr ($STATESAGA_LOG_LEVEL; "
    "default WARNING, INFO for a worker or a server)",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="STATESAGA_LOG_FORMAT",
    help="text for people, json for log collectors ($STATESAGA_LOG_FORMAT)",
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_format: LogFormat) -> None:
    """statesaga: durable workflows with saga compensation, as declarative state tables.

    Tracing and metrics: set the standard OTEL_* variables (OTEL_TRACES_EXPORTER=console or
    otlp) with `pip install 'statesaga[otel]'`.
    """
    # A worker says what it serves (and each job's outcome) at INFO; a server, each request.
    default = "INFO" if ctx.invoked_subcommand in ("worker", "serve") else "WARNING"
    configure_logging(log_level or default, log_format)
    if ctx.invoked_subcommand in _OBSERVED:
        from ..observability.otel import configure_from_env

        try:
            done = configure_from_env(prometheus=ctx.invoked_subcommand == "serve")
        except StatesagaError as exc:
            _fail(str(exc))
        if done:
            logging.getLogger("statesaga.observability.otel").info(
                "OpenTelemetry: %s", "; ".join(done)
            )


#: Commands that run or move workflows: they export traces and metrics when OTEL_* says so.
_OBSERVED = frozenset({"run", "worker", "recover", "serve", "cancel", "signal", "restart"})


def validate_file(path: str) -> Any:
    """Load a chart or a workflow definition (told apart by `chart:` / `workflow:`)."""
    data, lines = load_yaml_file(path)
    if is_definition(data):
        return definition_from_data(data, lines, path)
    return chart_from_data(data, lines, path)


def check_handler_hints(loaded: Any, handlers: tuple[str, ...]) -> None:
    """A definition's `handlers:` must each name an allowed module that can be found; then
    its steps' handlers must be registered (only allowed modules are imported to see)."""
    from ..definition import WorkflowDefinition
    from ..registry import Registry
    from ..security.allowlist import AllowList

    if not isinstance(loaded, WorkflowDefinition) or not (loaded.spec.handlers or handlers):
        return
    allowed = AllowList.for_operator(handlers)
    search = [Path(loaded.file).parent] if loaded.file else []
    absent = set(allowed.missing(search))

    def missing(module: str) -> str:
        return (
            f"allowed handler module {module!r} ({allowed.modules[module]}) is missing: "
            "not installed, not in the working directory nor next to the definition"
        )

    problems = [loaded.lines.problem((), missing(m)) for m in allowed.eager if m in absent]
    for i, hint in enumerate(loaded.spec.handlers):
        module = allowed.resolve(hint)
        if module is None:
            problems.append(loaded.lines.problem(("handlers", i), allowed.refusal(hint)))
        elif module in absent:
            problems.append(loaded.lines.problem(("handlers", i), missing(module)))
    if problems:
        raise DefinitionError(problems)
    registry = Registry()
    try:
        allowed.load_eager(registry, search)
    except StatesagaError as exc:
        raise DefinitionError([loaded.lines.problem((), str(exc))]) from None
    loaded.load_handlers(registry, allowed)
    loaded.check_handlers(registry)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_handlers_option
def validate(paths: tuple[str, ...], handlers: tuple[str, ...]) -> None:
    """Validate state tables and workflow definitions; print every error as PATH:LINE: message.
    A definition's `handlers:` must name modules the operator allows (see --handlers)."""
    bad = False
    for path in paths:
        try:
            check_handler_hints(validate_file(path), handlers)
        except DefinitionError as exc:
            bad = True
            for p in exc.problems:
                click.echo(str(p))
        else:
            click.echo(f"ok {path}")
    sys.exit(1 if bad else 0)


@main.command()
@click.option("--definition", is_flag=True, help="the schema of workflow definitions instead")
@click.option(
    "--input",
    "input_of",
    default=None,
    metavar="DEFINITION",
    type=click.Path(dir_okay=False),
    help="the schema of this definition's input (its `input:` section)",
)
def schema(definition: bool, input_of: str | None) -> None:
    """Print the JSON Schema of the chart YAML format (or of workflow definitions, or of one
    definition's input); the shipped copies are statecharts/chart.schema.json and
    statecharts/definition.schema.json."""
    if input_of is not None:
        _input_schema(input_of)
        return
    if definition:
        from ..definition import definition_json_schema

        out = definition_json_schema()
    else:
        out = chart_json_schema()
    click.echo(json.dumps(out, indent=2, sort_keys=True))


def _guard(func: Any) -> Any:
    """Show framework errors as one clean line instead of a traceback."""
    import functools

    from ..errors import InputError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DefinitionError as exc:
            for p in exc.problems:
                click.echo(str(p), err=True)
            sys.exit(2 if isinstance(exc, InputError) else 1)
        except StatesagaError as exc:
            _fail(str(exc))
        except Exception as exc:
            from ..runtime.outage import is_outage

            if is_outage(exc):
                _fail(f"cannot reach the store or queue: {type(exc).__name__}: {exc}")
            why = _backend_error(exc)
            if why is None:
                raise
            _fail(why)

    return wrapper


@_guard
def _input_schema(path: str) -> None:
    from ..definition import load_definition

    d = load_definition(path)
    if d.spec.input is None:
        raise click.UsageError(f"{path} declares no `input:` schema")
    click.echo(json.dumps(d.spec.input.json_schema(f"{d.name} input"), indent=2))


def _backend_error(exc: BaseException) -> str | None:
    """One line for what a store or queue backend raised (the server cannot be reached, a
    password is refused, a file cannot be opened), or None for a bug that deserves its
    traceback."""
    import sqlite3

    module = type(exc).__module__.split(".")[0]
    if module in ("redis", "rq"):
        return f"{module}: {type(exc).__name__}: {exc}".strip()
    if isinstance(exc, sqlite3.Error):
        return f"sqlite: {exc}"
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{':' if target else ''}{target}"
    return None


def _json_arg(value: str, option: str) -> Any:
    """A JSON option: the text itself, `@FILE`, or `@-` for standard input. Strict JSON (no
    NaN or Infinity, which a store would keep as null) and no larger than the input limit."""
    from ..security.limits import max_input_bytes, strict_json_loads

    limit = max_input_bytes()
    if value.startswith("@"):
        name = value[1:]
        try:
            if name == "-":
                raw = sys.stdin.buffer.read(limit + 1)
            else:
                with open(name, "rb") as f:
                    raw = f.read(limit + 1)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {name}: {exc.strerror or exc}", param_hint=option
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise click.BadParameter(f"{name} is not UTF-8 text", param_hint=option) from None
    else:
        text = value
    if len(text.encode("utf-8")) > limit:
        raise click.BadParameter(
            f"larger than {limit} bytes (STATESAGA_MAX_INPUT_BYTES)", param_hint=option
        )
    try:
        return strict_json_loads(text)
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity refused
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    except RecursionError:
        raise click.BadParameter("not JSON: nested too deeply", param_hint=option) from None


def _load_input(value: str | None) -> dict[str, Any]:
    """`--input '{"a": 1}'`, `--input @file.json` or `--input @-` (standard input)."""
    if not value:
        return {}
    data = _json_arg(value, "--input")
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    return data


class _Seconds(click.ParamType):  # type: ignore[type-arg]
    """A number of seconds: finite, not negative, and within the limit tables have."""

    name = "seconds"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from ..security.limits import MAX_SECONDS

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not 0 <= seconds <= MAX_SECONDS:  # also refuses nan and inf
            self.fail(f"{value!r} must be from 0 to {MAX_SECONDS:.0f} seconds", param, ctx)
        return seconds


SECONDS = _Seconds()


_store_option = click.option(
    "--store",
    "store",
    default=None,
    envvar="STATESAGA_STORE",
    show_envvar=True,
    help="store URL (default: sqlite:///statesaga.db)",
)
_queue_option = click.option(
    "--queue",
    "queue",
    default=None,
    envvar="STATESAGA_QUEUE",
    show_envvar=True,
    help="queue URL (default: inline://)",
)


class _RendererChoice(click.Choice):  # type: ignore[type-arg]
    """The installed renderers (plugins included) and `all`: a fixed choice for help, errors
    and shell completion, read from the entry points only when first needed."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        from ..diagram import renderer_names

        return (*renderer_names(), "all")

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


@main.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@click.option("--input", "input_", default=None, help="JSON object, or @file.json")
@click.option("--session", default=None, help="session id to file the workflow under")
@_store_option
@_queue_option
@click.option("--json", "as_json", is_flag=True, help="print the final WorkflowState document")
@click.option("--timeout", type=SECONDS, default=None, help="give up waiting after S seconds")
@_handlers_option
@_guard
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

    from ..definition import load_definition
    from ..models import WorkflowStatus
    from .console import Interrupted, open_engine, run_with_progress

    data = _load_input(input_)
    d = load_definition(definition)
    d.check_input(data)  # before any store or queue is opened
    engine = open_engine(store, queue, d, *_allowed(handlers, definition))
    _check_reachable(engine)
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
        _echo_waiting(wf, err=as_json)
        sys.exit(0)
    if not engine.has_ended(wf.status.value) and wf.status is not WorkflowStatus.FAILED:
        _echo_left_running(wf, store, queue, f"--timeout {timeout:g}s reached")
    elif wf.status is WorkflowStatus.FAILED:
        _echo_halted(wf, store, err=True)
    sys.exit(0 if wf.status is WorkflowStatus.COMPLETED else 1)


def _check_reachable(engine: Any) -> None:
    """Before a workflow is stored: the store answers (it is created if new) and the queue
    does, so an unreachable queue does not leave a RUNNING workflow whose job never left."""
    engine.store.initialize()
    check = getattr(engine.queue, "check", None)
    if check is not None:
        check()


def _echo_left_running(wf: Any, store: str | None, queue: str | None, why: str) -> None:
    """`run` stopped waiting (a timeout, Ctrl+C) but the workflow goes on: say which one,
    what it waits for, and how to follow or cancel it."""
    from .console import follow_up, queue_url, store_url, waiting_on

    in_process = queue_url(queue).startswith("inline:")
    left = (
        "stopped here: it resumes when `statesaga recover` finds it"
        if in_process
        else "still runs on the workers"
    )
    click.echo(f"{why}: {wf.id} is {wf.status.value} and {left}", err=True)
    for line in waiting_on(wf):
        click.echo(f"  {line}", err=True)
    for line in follow_up(wf, store_url(store), None if in_process else queue_url(queue)):
        click.echo(f"  {line}", err=True)


def _echo_halted(wf: Any, store: str | None, err: bool = False) -> None:
    from .console import restart_hint, store_url

    hint = restart_hint(wf, store_url(store))
    if hint:
        click.echo(f"{wf.id} {hint}", err=err)


@main.command()
@click.argument("workflow_id")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="print the stored document")
@click.option("--history", is_flag=True, help="also print every transition")
@_guard
def status(workflow_id: str, store: str | None, as_json: bool, history: bool) -> None:
    """Show one workflow: its status and its steps."""
    from rich.console import Console

    from .console import describe, retry_lines, steps_table

    wf = _get_workflow(store, workflow_id)
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
    _echo_halted(wf, store)


def _get_workflow(store: str | None, workflow_id: str) -> Any:
    """The stored workflow; when it is not there, say which store was looked in."""
    from ..errors import AdapterError, NotFoundError
    from ..plugins import NoStoreError, open_existing_store
    from .console import DEMO_STORE, shown_url, store_url

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


@main.command(name="list")
@click.option("--session", default=None)
@click.option(
    "--status",
    "status_",
    default=None,
    type=click.Choice([s.value for s in WorkflowStatus], case_sensitive=False),
    help="only workflows in this status",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most N workflows")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="one JSON summary per line")
@_guard
def list_(
    session: str | None, status_: str | None, limit: int | None, store: str | None, as_json: bool
) -> None:
    """List workflows, oldest first, filtered by session and/or status."""
    from ..plugins import open_existing_store
    from .console import store_url

    wanted = WorkflowStatus(status_.upper()) if status_ else None
    opened = open_existing_store(store_url(store))
    for wf in opened.list(session_id=session, status=wanted, limit=limit):
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
    if _report_unreadable(opened):
        sys.exit(1)


def _report_unreadable(store: Any) -> bool:
    """Name each stored document the last listing skipped because it cannot be read."""
    unreadable: dict[str, str] = getattr(store, "unreadable", {})
    for workflow_id, why in unreadable.items():
        click.echo(f"error: stored workflow {workflow_id} cannot be read: {why}", err=True)
    return bool(unreadable)


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
    type=_RendererChoice(),
    help="a renderer (a plugin's too) or `all` (needs -o)",
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
    envvar="STATESAGA_STORE",
    show_envvar=True,
    help="store URL for --instance (default: sqlite:///statesaga.db)",
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

    from ..diagram import Diagram, from_instance, from_loaded, get_renderer, renderer_names

    if bool(paths) == bool(instance):
        raise click.UsageError("give either PATH... or --instance WF-ID")
    names = renderer_names()
    if fmt == "all" and out_dir is None:
        raise click.UsageError("--format all writes several files; give -o DIR")
    renderers = [get_renderer(n) for n in (names if fmt == "all" else [fmt])]

    todo: list[tuple[str, Diagram]] = []
    if instance:
        wf = _get_workflow(store_url, instance)
        from ..definition import load_definition

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
    envvar="STATESAGA_QUEUE",
    show_envvar=True,
    help="rq:// queue URL (default: rq://127.0.0.1:6379/0?queue=statesaga)",
)
@click.option(
    "--store",
    "store",
    default=None,
    envvar="STATESAGA_STORE",
    show_envvar=True,
    help="store URL shared by every worker (default: sqlite:///statesaga.db)",
)
@_handlers_option
@click.option("--burst", is_flag=True, help="quit once the queue is empty")
@click.option(
    "--with-scheduler", is_flag=True, help="also move due delayed jobs (retries) onto the queue"
)
@click.option(
    "--heartbeat", type=SECONDS, default=5.0, show_default=True, help="seconds between heartbeats"
)
@click.option("--name", default=None, help="worker name (default: statesaga.HOST.PID.RANDOM)")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="this worker's level (default: statesaga --log-level, else INFO)",
)
@click.option(
    "--step-chart",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="a step lifecycle that extends the shipped one (for sagas with `step_lifecycle:`)",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="run N worker processes, each restarted when it exits (SIGTERM stops them all)",
)
@click.option(
    "--recover-every",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="S",
    help="also keep `statesaga recover --every S` running beside the worker process(es)",
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
    log_level: str | None,
    step_chart: str | None,
    processes: int,
    recover_every: float | None,
    eager: bool,
) -> None:
    """Run step and compensation jobs from an RQ queue (SIGTERM: finish the step, then exit)."""
    import os

    log_level = _worker_log_level(log_level)

    from ..security.allowlist import AllowList
    from ..worker import DEFAULT_WORKER_QUEUE, WorkerSettings, run_worker
    from .console import store_url

    allowed = AllowList.for_operator(handlers)
    settings = WorkerSettings(
        queue_url=queue or os.environ.get("STATESAGA_QUEUE") or DEFAULT_WORKER_QUEUE,
        store_url=store_url(store),
        handlers=list(allowed.eager),
        allowed=allowed,
        burst=burst,
        with_scheduler=with_scheduler,
        heartbeat=heartbeat,
        name=name,
        log_level=log_level.upper(),
        step_chart=step_chart,
        eager=eager,
    )
    if processes > 1 or recover_every is not None:
        sys.exit(_supervise_workers(settings, processes, recover_every))
    run_worker(settings)


def _supervise_workers(settings: Any, processes: int, recover_every: float | None) -> int:
    """`worker --processes N`: check the settings here (a bad URL or module fails once, not
    in a restart loop), then keep N `statesaga worker` children (and the recovery loop)."""
    import os

    from ..worker import build_engine
    from .supervisor import Supervisor, worker_children

    if settings.burst:
        raise click.UsageError("--processes keeps workers running; it cannot be used with --burst")
    engine = build_engine(settings, "supervisor")
    engine.store.initialize()
    engine.store.close()
    engine.queue.close()
    args = [f"--heartbeat={settings.heartbeat}", f"--log-level={settings.log_level}"]
    args += [f"--handlers={m}" for m in settings.handlers]
    args += ["--with-scheduler"] if settings.with_scheduler else []
    args += [] if settings.eager else ["--no-eager"]
    args += [f"--step-chart={os.path.abspath(settings.step_chart)}"] if settings.step_chart else []
    # The children find allowed modules of the working directory as a single worker does
    # (statesaga.security.allowlist: after installed packages, never shadowing them).
    env = dict(os.environ, STATESAGA_STORE=settings.store_url, STATESAGA_QUEUE=settings.queue_url)
    children = worker_children(processes, args, settings.name, recover_every)
    return Supervisor(children, env).run()


def _worker_log_level(given: str | None) -> str:
    """The worker's own --log-level, else the one `statesaga --log-level` set."""
    if given is not None:
        set_level(given)
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


@main.command()
@click.option("--group", "groups", multiple=True, help="only this entry-point group (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per plugin")
@click.option(
    "--strict",
    is_flag=True,
    help="exit 1 when a plugin fails to load (a missing optional extra is not a failure)",
)
def plugins(groups: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """List installed plugins (group, name, module, version); report any that fail to load."""
    from dataclasses import asdict

    from ..plugins import installed

    found = [p for p in installed() if not groups or p.group in groups]
    # A built-in adapter whose optional extra is not installed is not broken, just absent.
    broken = [p for p in found if p.error and not p.missing_extra]
    if as_json:
        for p in found:
            click.echo(json.dumps(asdict(p), sort_keys=True))
    else:
        rows = [
            (
                p.group,
                p.name,
                p.value or p.module,
                p.version or "-",
                f"not installed: pip install 'statesaga[{p.missing_extra}]'"
                if p.missing_extra
                else p.error or "ok",
            )
            for p in found
        ]
        header = ("GROUP", "NAME", "MODULE", "VERSION", "STATUS")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
            click.echo("  ".join([*cells, row[4]]))
    absent = sorted({p.missing_extra for p in found if p.missing_extra})
    if absent and not as_json:
        extras = ",".join(a for a in absent if a)
        click.echo(f"optional extras not installed: pip install 'statesaga[{extras}]'", err=True)
    if broken:
        # A broken third-party plugin must not hide the others: report it and go on.
        names = ", ".join(f"{p.group}:{p.name}" for p in broken)
        click.echo(f"{len(broken)} plugin(s) failed to load: {names}", err=True)
    sys.exit(1 if broken and strict else 0)


# -- statesaga recover / cancel / check-crashes (issue 7: recovery, cancel, crash matrix) ------
def _recovery_engine(store: str | None, queue: str | None, handlers: tuple[str, ...]) -> Any:
    """An engine for recovery commands: with `inline://` this process runs the jobs itself,
    so it needs the handler modules (an explicit allow-list, as for `statesaga worker`)."""
    from ..engine import Engine
    from ..plugins import open_queue, open_store
    from .console import queue_url, store_url

    allowed, registry = _allowed(handlers)
    return Engine(
        open_store(store_url(store)), open_queue(queue_url(queue)), registry, allowed=allowed
    )


def _run_inline(engine: Any, ids: list[str], timeout: float | None) -> None:
    """With an in-process queue the re-enqueued jobs run here, until those workflows end."""
    from ..models import ACTIVE_WORKFLOW

    if not ids or not getattr(engine.queue, "in_process", False):
        return
    engine.queue.drain(
        lambda: all(engine.store.get(i).status not in ACTIVE_WORKFLOW for i in ids), timeout
    )


@main.command()
@_store_option
@_queue_option
@_handlers_option
@click.option(
    "--timeout",
    type=SECONDS,
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
@click.option("--every", "every", type=SECONDS, help="scan every S seconds until interrupted")
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
    from ..runtime.recovery import Recovery, RecoveryAction

    engine = _recovery_engine(store, queue, handlers)
    recovery = Recovery(
        engine, timeout=timeout, action=RecoveryAction.RESUME if resume else RecoveryAction.CANCEL
    )
    interval = 0.0 if every is True else float(every)
    if interval > 0:
        _recover_every(engine, recovery, interval, session)
        return
    _require_recovery_handlers(engine, recovery, session)
    report = _recover_once(engine, recovery, session)
    if not report.handled and not report.errors:
        click.echo("nothing to recover")
    _exit_on_failed(engine, report.resumed + report.cancelled)


def _require_recovery_handlers(engine: Any, recovery: Any, session: str | None) -> None:
    """Before recovery runs lost workflows in this process (inline queue), refuse when their
    handlers are not allowed here; workers elsewhere have their own allow-list."""
    if getattr(engine.queue, "in_process", False):
        for wf in recovery.scan(session):
            _require_handlers(engine, wf)


def _recover_once(engine: Any, recovery: Any, session: str | None) -> Any:
    """One scan: print what it did; with an in-process queue, run those workflows here."""
    report = recovery.run_once(session)
    for wf_id in report.resumed:
        click.echo(f"resumed {wf_id}")
    for wf_id in report.cancelled:
        click.echo(f"cancelled {wf_id}")
    for wf_id, why in report.errors.items():
        click.echo(f"skipped {wf_id}: {why}", err=True)
    _report_unreadable(engine.store)
    _run_inline(engine, report.resumed + report.cancelled, None)
    return report


def _recover_every(engine: Any, recovery: Any, interval: float, session: str | None) -> None:
    """`recover --every S`: scan until interrupted, riding out store and queue outages (one
    log line when one starts and one when it ends, retries backing off in between)."""
    import logging
    import threading

    from ..runtime.outage import Outage, is_outage

    outage = Outage("recovery loop")
    stop = threading.Event()
    while not stop.is_set():
        try:
            if outage.down:
                recovery.scan(session)  # read-only: is the store back?
                outage.ok()
                # No heartbeat could be written during the outage: give the live workers one
                # timeout to beat again before taking their workflows for lost.
                stop.wait(recovery.timeout)
                continue
            _require_recovery_handlers(engine, recovery, session)
            _recover_once(engine, recovery, session)
        except click.UsageError:
            raise
        except Exception as exc:  # an outage never ends the loop: the next scan retries
            if is_outage(exc):
                stop.wait(outage.failed(exc))
                continue
            if isinstance(exc, StatesagaError):
                raise  # bad settings (a refused store, a bad URL): one line, exit 1
            logging.getLogger("statesaga.runtime.recovery").exception("recovery scan failed")
        outage.ok()
        stop.wait(interval)


def _exit_on_failed(engine: Any, ids: list[str]) -> None:
    """Exit 1 when a workflow this command acted on ended FAILED (halted)."""
    from ..models import WorkflowStatus

    failed = [i for i in ids if engine.get(i).status is WorkflowStatus.FAILED]
    for wf_id in failed:
        click.echo(f"{wf_id} FAILED", err=True)
    if failed:
        sys.exit(1)


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
    from ..errors import StateError, TransitionError

    engine = _recovery_engine(store, queue, handlers)
    current = engine.get(workflow_id)
    if not engine.has_ended(current.status.value):  # an ended one: cancel() says why
        _require_handlers(engine, current)
    try:
        wf = engine.cancel(workflow_id, force=force, by="cli")
    except (TransitionError, StateError) as exc:
        current = engine.get(workflow_id)
        if isinstance(exc, StateError) and current.status is not WorkflowStatus.FAILED:
            raise
        _fail(_why_not_cancelled(current, store))
    click.echo(f"{wf.id} {wf.status.value}")
    _run_inline(engine, [wf.id], None)
    final = engine.get(workflow_id)
    if final.status is not wf.status:
        click.echo(f"{final.id} {final.status.value}")
    _exit_on_failed(engine, [wf.id])


def _why_not_cancelled(wf: Any, store: str | None) -> str:
    """A refused cancel in the operator's words (not the chart's trigger names)."""
    from .console import follow_up, restart_hint, store_url

    watch = follow_up(wf, store_url(store))[0].split(":", 1)[1].strip()
    if wf.status is WorkflowStatus.COMPENSATING:
        return (
            f"{wf.id} is already being compensated (COMPENSATING): its completed steps are "
            f"being undone, so there is nothing left to cancel; watch it: {watch}"
        )
    if wf.status is WorkflowStatus.CANCELLING:
        return (
            f"{wf.id} is already being cancelled (CANCELLING): the step in flight finishes, "
            f"then the saga unwinds; `statesaga cancel {wf.id} --force` compensates at once"
        )
    if wf.status is WorkflowStatus.FAILED:
        return (
            f"{wf.id} is halted FAILED and cannot be cancelled (nothing past the pivot is "
            f"undone); {restart_hint(wf, store_url(store))}"
        )
    return f"{wf.id} is {wf.status.value} and cannot be cancelled now; watch it: {watch}"


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
@_handlers_option
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
    from ..verify.crashcheck import BOUNDARIES, Scenario, check_crashes, format_table

    name = Path(definition).stem
    from ..security.allowlist import AllowList

    modules = AllowList.for_operator(handlers).eager
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
    """`--payload '{"by": "alice"}'`, `--payload @file.json` or `@-`: any JSON value."""
    if value is None:
        return None
    return _json_arg(value, "--payload")


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
    engine.allowed.load(engine.registry, wf.handlers)  # only what the allow-list allows
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
            f"{', '.join(missing)}; pass {hint}, or --queue rq://HOST:PORT/DB?queue=NAME "
            "(or $STATESAGA_QUEUE) to leave it to the workers"
        )


def _echo_waiting(wf: Any, err: bool = False) -> None:
    """Say which signals the workflow waits for, and the command that sends each."""
    from ..models import StepStatus

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

    from ..models import WorkflowStatus

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
    from ..definition import load_definition
    from ..plugins import open_existing_store
    from ..versions import check_upgrade
    from .console import store_url

    new = load_definition(definition)
    opened = open_existing_store(store_url(store))
    checks = check_upgrade(opened, new)
    blocked = [c for c in checks if not c.ok]
    unreadable = _report_unreadable(opened)
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
    sys.exit(1 if blocked or unreadable else 0)


# -- statesaga serve (issue 19: the web dashboard and HTTP API) ----------------------------------
@main.command()
@_store_option
@_queue_option
@_handlers_option
@click.option(
    "--definitions",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="the directory of workflow definitions that may be started from the server",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar="STATESAGA_TOKEN",
    show_envvar=True,
    help="allow changes for whoever presents it (default: read-only); prefer the env var, "
    "which `ps` does not show",
)
@_guard
def serve(
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
    definitions: str | None,
    host: str,
    port: int,
    token: str | None,
) -> None:
    """Serve the dashboard and JSON API: every stored workflow, live diagrams, and (with a
    token) signal, cancel, restart and start, each recorded in the history with who did it."""
    from .console import queue_url, store_url

    try:
        from ..web import ServeSettings
        from ..web import serve as run_server
    except ImportError as exc:
        _fail(f"the dashboard needs its extra: pip install 'statesaga[ui]' ({exc.name} missing)")
    if token is not None and len(token) < 12:
        _fail("--token must be at least 12 characters")
    settings = ServeSettings(
        store=store_url(store),
        queue=queue_url(queue),
        handlers=tuple(m.strip() for value in handlers for m in value.split(",") if m.strip()),
        definitions=Path(definitions) if definitions else None,
        token=token or None,
    )
    run_server(settings, host=host, port=port)


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
    from ..definition import load_definition
    from ..verify.simulation import run_seeds
    from ..verify.simulation import simulate as simulate_seed

    if click.get_current_context().find_root().params.get("log_level") is None:
        # Simulated failures are the point, not news: the trace reports what matters.
        logging.getLogger("statesaga").setLevel(logging.ERROR)
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
    # `python -m statesaga.cli` puts the working directory first on sys.path, where a planted
    # `redis.py` would shadow the library; allowed handler modules are looked up there last.
    import os

    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    main()
