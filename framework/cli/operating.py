"""The operating room of the CLI: commands for whoever keeps workflows going on real
machines: `worker` (and its supervisor), `recover`, `cancel`, `signal`, `restart`, `serve`,
`check-crashes`, `check-upgrade`, `plugins`. Engines come from statesaga.app, the recovery
loop from statesaga.runtime.recovery; what stays here is what a command says and exits with."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..app import EngineOptions, queue_url, store_url
from ..models import WorkflowStatus
from ..observability.logs import LOG_LEVELS, set_level
from ..wording import counted
from .options import (
    SECONDS,
    fail,
    guard,
    handlers_option,
    json_arg,
    load_input,
    queue_option,
    store_option,
    tools_option,
)
from .running import echo_waiting, report_unreadable


# -- statesaga worker (issue 5: distributed execution on RQ) -----------------------------------
@click.command()
@click.option(
    "--queue",
    "queue",
    default=None,
    envvar="STATESAGA_QUEUE",
    show_envvar=True,
    help="rq:// or sqlq:// queue URL (default: rq://127.0.0.1:6379/0?queue=statesaga)",
)
@click.option(
    "--store",
    "store",
    default=None,
    envvar="STATESAGA_STORE",
    show_envvar=True,
    help="store URL shared by every worker (default: sqlite:///statesaga.db)",
)
@handlers_option
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
    "--cpu",
    default=None,
    metavar="N|each",
    help="run on CPU N alone (each: with --processes, worker i on the i-th usable CPU in turn); "
    "a process's threads pass the GIL between cores at a cost, so one core each is faster",
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
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    envvar="STATESAGA_METRICS_PORT",
    show_envvar=True,
    help="serve metrics for Prometheus on this port: this worker's steps and the fleet's "
    "queue depth, workers, stuck workflows (OTEL_METRICS_EXPORTER=prometheus alone: "
    "OTEL_EXPORTER_PROMETHEUS_PORT, default 9464)",
)
@click.option(
    "--metrics-host",
    default=None,
    help="the address the metrics port binds (default: OTEL_EXPORTER_PROMETHEUS_HOST, "
    "else localhost)",
)
@guard
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
    cpu: str | None,
    recover_every: float | None,
    eager: bool,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Run step and compensation jobs from an rq:// or sqlq:// queue (SIGTERM: finish the
    step, then exit)."""
    import os

    from ..observability.otel import configure_from_env, prometheus_wanted

    log_level = _worker_log_level(log_level)
    cpus = _cpus(cpu, processes)
    if metrics_port is not None and processes > 1:
        raise click.UsageError(
            "--metrics-port serves one process's metrics: with --processes N, start N workers "
            "each with a port of its own"
        )
    prometheus = metrics_port is not None or prometheus_wanted()
    done = configure_from_env(prometheus=prometheus)
    if done:
        logging.getLogger("statesaga.otel").info("OpenTelemetry: %s", "; ".join(done))
    if prometheus and metrics_port is None and processes == 1:
        metrics_port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT") or 9464)

    from ..security.allowlist import AllowList
    from ..worker import DEFAULT_WORKER_QUEUE, WorkerSettings, run_worker

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
        metrics_port=metrics_port if processes == 1 else None,
        metrics_host=metrics_host,
    )
    if processes > 1 or recover_every is not None:
        sys.exit(_supervise_workers(settings, processes, recover_every, cpus))
    if cpus:
        from ..runtime.cpu import pin_to_cpu

        pin_to_cpu(cpus[0])
    run_worker(settings)


def _cpus(cpu: str | None, processes: int) -> list[int]:
    """The CPU of each worker process for --cpu (none: wherever the system runs them)."""
    from ..runtime.cpu import cpu_for, usable_cpus

    if cpu is None:
        return []
    if cpu == "each":
        return [cpu_for(i) for i in range(processes)]
    if not cpu.isdigit() or int(cpu) not in usable_cpus():
        raise click.BadParameter(
            f"{cpu!r} is not a usable CPU (usable: {usable_cpus()}) or 'each'", param_hint="--cpu"
        )
    if processes > 1:
        raise click.BadParameter(
            "one CPU for several processes would make them take turns; use --cpu each",
            param_hint="--cpu",
        )
    return [int(cpu)]


def _supervise_workers(
    settings: Any, processes: int, recover_every: float | None, cpus: list[int]
) -> int:
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
    children = worker_children(processes, args, settings.name, recover_every, cpus=cpus)
    return Supervisor(children, env).run()


def _worker_log_level(given: str | None) -> str:
    """The worker's own --log-level, else the one `statesaga --log-level` set."""
    if given is not None:
        set_level(given)
    return logging.getLevelName(logging.getLogger().getEffectiveLevel())


@click.command()
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
        click.echo(f"{counted(len(broken), 'plugin')} failed to load: {names}", err=True)
    sys.exit(1 if broken and strict else 0)


# -- statesaga recover / cancel / check-crashes (issue 7: recovery, cancel, crash matrix) ------
def _recovery_engine(store: str | None, queue: str | None, handlers: tuple[str, ...]) -> Any:
    """An engine for recovery commands: with `inline://` this process runs the jobs itself,
    so it needs the handler modules (an explicit allow-list, as for `statesaga worker`)."""
    return EngineOptions(store, queue, handlers=handlers, allow="operator").build()


def _acting_on(
    store: str | None, queue: str | None, handlers: tuple[str, ...], workflow_id: str
) -> tuple[Any, Any]:
    """The engine and the stored workflow a command acts on. A store that is not there yet
    holds no workflow: it is refused, not created (a refused command writes nothing)."""
    from ..errors import StatesagaError
    from ..ports import store_exists

    engine = _recovery_engine(store, queue, handlers)
    if not store_exists(engine.store):
        raise StatesagaError(
            f"workflow {workflow_id} not found: no store at {engine.store.location()} "
            "(nothing is stored there yet)"
        )
    return engine, engine.get(workflow_id)


def _run_inline(engine: Any, ids: list[str], timeout: float | None) -> None:
    """With an in-process queue the re-enqueued jobs run here, until those workflows end."""
    from ..vocabulary import WORKFLOW_IN_FLIGHT

    if not ids or not engine.queue.in_process:
        return
    engine.queue.drain(
        lambda: all(engine.store.get(i).status not in WORKFLOW_IN_FLIGHT for i in ids), timeout
    )


@click.command()
@store_option
@queue_option
@handlers_option
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
@guard
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
    from ..ports import store_exists
    from ..runtime.recovery import Recovery, RecoveryAction, recover_every

    engine = _recovery_engine(store, queue, handlers)
    recovery = Recovery(
        engine, timeout=timeout, action=RecoveryAction.RESUME if resume else RecoveryAction.CANCEL
    )
    interval = 0.0 if every is True else float(every)
    if interval == 0 and not store_exists(engine.store):
        # Refused like `status` and `list` (a typo in the path must not read as "all is well");
        # `--every` waits instead: beside workers that have not made the store yet, that is normal.
        from ..errors import StatesagaError

        raise StatesagaError(
            f"no store at {engine.store.location()}: nothing has been stored there yet "
            "(recover --every waits for one)"
        )
    if interval > 0:

        def scan_once() -> None:
            _require_recovery_handlers(engine, recovery, session)
            _recover_once(engine, recovery, session)

        recover_every(recovery, scan_once, interval, session, fatal=(click.UsageError,))
        return
    _require_recovery_handlers(engine, recovery, session)
    report = _recover_once(engine, recovery, session)
    unreadable = engine.store.unreadable
    if not report.handled and not report.errors and not unreadable:
        click.echo("nothing to recover")
    _exit_on_failed(engine, report.resumed + report.cancelled)
    if unreadable:  # named by _recover_once; the others were recovered all the same
        sys.exit(1)


def _require_recovery_handlers(engine: Any, recovery: Any, session: str | None) -> None:
    """Before recovery runs lost workflows in this process (inline queue), refuse when their
    handlers are not allowed here; workers elsewhere have their own allow-list."""
    if engine.queue.in_process:
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
    report_unreadable(engine.store)
    _run_inline(engine, report.resumed + report.cancelled, None)
    return report


def _exit_on_failed(engine: Any, ids: list[str]) -> None:
    """Exit 1 when a workflow this command acted on ended FAILED (halted)."""
    from ..models import WorkflowStatus

    failed = [i for i in ids if engine.get(i).status is WorkflowStatus.FAILED]
    for wf_id in failed:
        click.echo(f"{wf_id} FAILED", err=True)
    if failed:
        sys.exit(1)


@click.command()
@click.argument("workflow_id")
@click.option("--force", is_flag=True, help="compensate at once; a late result is undone too")
@store_option
@queue_option
@handlers_option
@guard
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

    engine, current = _acting_on(store, queue, handlers, workflow_id)
    if not engine.has_ended(current.status.value):  # an ended one: cancel() says why
        _require_handlers(engine, current)
    try:
        wf = engine.cancel(workflow_id, force=force, by="cli")
    except (TransitionError, StateError) as exc:
        current = engine.get(workflow_id)
        if isinstance(exc, StateError) and current.status is not WorkflowStatus.FAILED:
            raise
        fail(_why_not_cancelled(current, store))
    click.echo(f"{wf.id} {wf.status.value}")
    _run_inline(engine, [wf.id], None)
    final = engine.get(workflow_id)
    if final.status is not wf.status:
        click.echo(f"{final.id} {final.status.value}")
    _exit_on_failed(engine, [wf.id])


def _why_not_cancelled(wf: Any, store: str | None) -> str:
    """A refused cancel in the operator's words (not the chart's trigger names)."""
    from .console import follow_up, prog, restart_hint

    watch = follow_up(wf, store_url(store))[0].split(":", 1)[1].strip()
    if wf.status is WorkflowStatus.COMPENSATING:
        return (
            f"{wf.id} is already being compensated (COMPENSATING): its completed steps are "
            f"being undone, so there is nothing left to cancel; watch it: {watch}"
        )
    if wf.status is WorkflowStatus.CANCELLING:
        return (
            f"{wf.id} is already being cancelled (CANCELLING): the step in flight finishes, "
            f"then the saga unwinds; `{prog()} cancel {wf.id} --force` compensates at once"
        )
    if wf.status is WorkflowStatus.FAILED:
        return (
            f"{wf.id} is halted FAILED and cannot be cancelled (nothing past the pivot is "
            f"undone); {restart_hint(wf, store_url(store))}"
        )
    return f"{wf.id} is {wf.status.value} and cannot be cancelled now; watch it: {watch}"


@click.command(name="check-crashes")
@click.argument("definition", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="crash an agent's plan (statesaga plan run PLAN) instead of a saga; its tools come "
    "from --tools (--handlers)",
)
@click.option(
    "--revise",
    "patch",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="--plan: apply this patch (add/replace/remove) mid-flight in every run",
)
@click.option(
    "--revise-after",
    default=None,
    metavar="ITEM",
    help="--plan: apply it between two jobs once ITEM has completed (default: when the plan "
    "first waits for an approval)",
)
@click.option(
    "--reject",
    "reject_",
    is_flag=True,
    help="--plan: reject the approval requests (the plan unwinds) instead of approving them",
)
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
@tools_option
@click.option(
    "--boundary", "boundaries", multiple=True, help="only these boundaries (default: all)"
)
@click.option("--parallel", type=int, default=None, help="runs side by side")
@click.option("--keep", is_flag=True, help="keep the run directories (stores, ledgers, logs)")
@click.option(
    "--expect",
    "expects",
    multiple=True,
    help="the correct outcome(s) of an input: COMPLETED, COMPENSATED, FAILED or several "
    "joined by commas; one per --input in order (or one for all), e.g. FAILED for a "
    "failure after the pivot",
)
@click.option(
    "--signal",
    "signals",
    multiple=True,
    metavar="[N:]STEP=PAYLOAD",
    help="send PAYLOAD (JSON, or @file.json) to the wait step STEP whenever it waits; "
    "repeatable; N: only for the Nth --input",
)
@guard
def check_crashes_command(
    definition: str | None,
    plan_file: str | None,
    patch: str | None,
    revise_after: str | None,
    reject_: bool,
    inputs: tuple[str, ...],
    expects: tuple[str, ...],
    signals: tuple[str, ...],
    queue: str,
    store: str | None,
    tools: tuple[str, ...],
    boundaries: tuple[str, ...],
    parallel: int | None,
    keep: bool,
) -> None:
    """Run a saga with its worker process SIGKILLed at every job boundary in turn, recover,
    and check it converges with each side effect applied at most once; print the table.
    Timers (a wait's timeout, a sleep) are fast-forwarded; a wait gets the --signal given.

    With --plan, an agent's plan runs instead, revised mid-flight (--revise) and its approval
    requests answered in every run (a stale and a duplicate approval must be refused), and
    each run is also judged by the plan's invariants: a removed item never runs, every call
    has its plan version's args, an approval is taken once and for those args, nothing is
    undone before what depends on it."""
    from ..security.allowlist import AllowList
    from ..verify.crashcheck import BOUNDARIES, Scenario, check_crashes, format_table
    from ..verify.crashcheck.plans import PlanRun

    if (definition is None) == (plan_file is None):
        raise click.UsageError("give a saga DEFINITION or --plan PLAN (one of them)")
    plan_only = {"--revise": patch, "--revise-after": revise_after, "--reject": reject_ or None}
    given = [name for name, value in plan_only.items() if value is not None]
    if plan_file is None and given:
        raise click.UsageError(f"{given[0]} goes with --plan PLAN")
    if plan_file is not None and (inputs or signals):
        raise click.UsageError(
            "a plan takes no --input or --signal: its args are in the plan, and its approval "
            "requests are answered by the check (--reject to refuse them)"
        )
    if revise_after is not None and patch is None:
        raise click.UsageError("--revise-after goes with --revise PATCH")
    source = definition or plan_file
    assert source is not None
    name = Path(source).stem
    patch = str(Path(patch).resolve()) if patch is not None else None
    run = PlanRun(patch, revise_after, reject_) if plan_file is not None else None
    modules = AllowList.for_operator(tools).eager
    runs = inputs or ("",)
    if len(expects) not in (0, 1, len(runs)):
        raise click.BadParameter(
            f"{len(expects)} given for {len(runs)} --input: give one per --input, or one for all",
            param_hint="--expect",
        )
    wanted: list[str | None] = [None] * len(runs)
    if expects:
        wanted = [*expects] * len(runs) if len(expects) == 1 else [*expects]
    sends = _signals_per_input(signals, len(runs))
    try:
        scenarios = [
            Scenario(
                f"{name}-{i}" if len(inputs) > 1 else name,
                str(Path(source).resolve()),
                load_input(value),
                modules,
                expect,
                sends[i - 1],
                run,
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
    except ValueError as exc:  # a bad --expect, --signal or --boundary: one line, exit 2
        raise click.UsageError(str(exc)) from None
    click.echo(format_table(results))
    sys.exit(0 if all(r.ok for r in results) else 1)


def _signals_per_input(signals: tuple[str, ...], inputs: int) -> list[dict[str, Any]]:
    """`--signal [N:]STEP=PAYLOAD` options as one {step: payload} per input."""
    per: list[dict[str, Any]] = [{} for _ in range(inputs)]
    for option in signals:
        target, sep, payload = option.partition("=")
        index, colon, step = target.rpartition(":")
        if not sep or not step:
            raise click.BadParameter(f"{option!r} is not STEP=PAYLOAD", param_hint="--signal")
        which = range(inputs)
        if colon:
            if not index.isdigit() or not 1 <= int(index) <= inputs:
                raise click.BadParameter(
                    f"{option!r}: {index!r} is not an --input number (1 to {inputs})",
                    param_hint="--signal",
                )
            which = range(int(index) - 1, int(index))
        value = json_arg(payload, "--signal")
        for i in which:
            per[i][step] = value
    return per


# -- statesaga signal / restart / check-upgrade (issue 11: people and time in the loop) ----------
def _payload(value: str | None) -> Any:
    """`--payload '{"by": "alice"}'`, `--payload @file.json` or `@-`: any JSON value."""
    if value is None:
        return None
    return json_arg(value, "--payload")


def _run_until_waiting(engine: Any, workflow_id: str) -> Any:
    """With an in-process queue the jobs a command enqueued run here, until the workflow ends
    or waits for a signal again; with workers elsewhere, the stored document as it is."""
    if engine.queue.in_process:
        return engine.wait(workflow_id)
    return engine.get(workflow_id)


@click.command()
@click.argument("workflow_id")
@click.argument("name")
@click.option("--payload", default=None, help="JSON value (the step's result), or @file.json")
@click.option("--by", default=None, help="who sends it (kept in the history)")
@store_option
@queue_option
@handlers_option
@guard
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
    to a finished workflow, or that no step waits for, is an error (exit 1). Exit 0 when the
    workflow then completes (or waits again, or runs on workers elsewhere), 1 otherwise."""
    import getpass

    from ..models import halt_reason

    data = _payload(payload)
    engine, current = _acting_on(store, queue, handlers, workflow_id)
    if not engine.has_ended(current.status.value):  # an ended one: signal() says why
        _require_handlers(engine, current)
    sender = by or (data.get("by") if isinstance(data, dict) else None) or getpass.getuser()
    wf = engine.signal(workflow_id, name, data, by=str(sender))
    click.echo(f"{wf.id} {name} sent ({wf.status.value})")
    final = _run_until_waiting(engine, workflow_id)
    echo_waiting(final)
    if final.revision != wf.revision:
        click.echo(f"{final.id} {final.status.value}")
    if final.status is WorkflowStatus.FAILED:
        click.echo(f"{final.id} halted: {halt_reason(final)}", err=True)
    # As `run` and `restart`: 0 while it goes on (waits, or runs on workers) or completed.
    sys.exit(0 if final.status in (WorkflowStatus.COMPLETED, WorkflowStatus.RUNNING) else 1)


def _require_handlers(engine: Any, wf: Any) -> None:
    """With an in-process queue this command runs the steps it sets going, so their handler
    modules must be on the allow-list (`--handlers`): a module is never imported because a
    stored document names it."""
    if not engine.queue.in_process:
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


@click.command()
@click.argument("workflow_id")
@click.option("--from", "from_step", required=True, metavar="STEP", help="the step to re-run")
@click.option("--reason", required=True, help="why (kept in the history)")
@click.option("--by", default=None, help="who restarts it (default: the current user)")
@store_option
@queue_option
@handlers_option
@guard
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

    engine, current = _acting_on(store, queue, handlers, workflow_id)
    if current.status is WorkflowStatus.FAILED:  # anything else: restart() says why not
        _require_handlers(engine, current)
    wf = engine.restart(workflow_id, from_step, reason=reason, by=by or getpass.getuser())
    click.echo(f"{wf.id} restarted from {from_step} ({wf.status.value})")
    final = _run_until_waiting(engine, workflow_id)
    echo_waiting(final)
    click.echo(f"{final.id} {final.status.value}")
    sys.exit(0 if final.status in (WorkflowStatus.COMPLETED, WorkflowStatus.RUNNING) else 1)


@click.command(name="check-upgrade")
@click.argument("definition", type=click.Path(exists=True, dir_okay=False))
@store_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per instance")
@guard
def check_upgrade_command(definition: str, store: str | None, as_json: bool) -> None:
    """Can the in-flight instances of an older version continue under DEFINITION? Lists each
    (its current step must still exist; its completed steps must keep their compensations);
    exit 1 if any cannot."""
    from ..definitions.load import load_definition
    from ..plugins import open_existing_store
    from ..versions import check_upgrade

    new = load_definition(definition)
    opened = open_existing_store(store_url(store))
    checks = check_upgrade(opened, new)
    blocked = [c for c in checks if not c.ok]
    unreadable = report_unreadable(opened)
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
            f"{counted(len(checks), 'in-flight instance')} of {new.name} on other versions; "
            f"{len(blocked)} cannot continue under v{new.version}"
        )
    sys.exit(1 if blocked or unreadable else 0)


# -- statesaga serve (issue 19: the web dashboard and HTTP API) ----------------------------------
@click.command()
@store_option
@queue_option
@handlers_option
@click.option(
    "--definitions",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="the directory of workflow definitions that may be started from the server",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token",
    default=None,
    envvar="STATESAGA_TOKEN",
    show_envvar=True,
    help="allow changes for whoever presents it (default: read-only); prefer the env var, "
    "which `ps` does not show",
)
@click.option(
    "--create",
    is_flag=True,
    help="make the store if it does not exist yet (else a store that is not there is refused, "
    "as `status` and `list` refuse it: a typo in its path must not show an empty dashboard)",
)
@guard
def serve(
    store: str | None,
    queue: str | None,
    handlers: tuple[str, ...],
    definitions: str | None,
    host: str,
    port: int,
    token: str | None,
    create: bool,
) -> None:
    """Serve the dashboard and JSON API: every stored workflow, live diagrams, and (with a
    token) signal, cancel, restart and start, each recorded in the history with who did it."""

    try:
        from ..web import ServeSettings
        from ..web import serve as run_server
        from ..web.app import create_app  # noqa: F401  (what needs the extra)
    except ImportError as exc:
        fail(f"the dashboard needs its extra: pip install 'statesaga[ui]' ({exc.name} missing)")
    if token is not None and len(token) < 12:
        fail("--token must be at least 12 characters")
    if not create:
        from ..plugins import open_existing_store

        open_existing_store(store_url(store)).close()  # NoStoreError: one line, exit 1
    settings = ServeSettings(
        store=store_url(store),
        queue=queue_url(queue),
        handlers=tuple(m.strip() for value in handlers for m in value.split(",") if m.strip()),
        definitions=Path(definitions) if definitions else None,
        token=token or None,
    )
    run_server(settings, host=host, port=port)


COMMANDS: tuple[click.Command, ...] = (
    worker,
    plugins,
    recover,
    cancel,
    check_crashes_command,
    signal,
    restart,
    check_upgrade_command,
    serve,
)
