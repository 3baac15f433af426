"""The planning room of the CLI: commands for agents' plans (statesaga.plans): `tools` (the
tools an agent's model may be given, as JSON Schema tool definitions), `plan run | check |
revise | show`, and `approve` / `reject` (a person's answer to an approval request, bound to the
hash of the item's exact arguments). Tools come only from the operator's allow-list:
`--tools MODULE` is `--handlers MODULE` under the name an agent builder looks for."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

import click

from ..app import EngineOptions, check_reachable, queue_url
from .options import SECONDS, guard, queue_option, store_option, tools_option


def _engine(store: str | None, queue: str | None, tools: tuple[str, ...]) -> Any:
    return EngineOptions(store, queue, handlers=tools, allow="operator").build()


def _engine_for(
    store: str | None, queue: str | None, tools: tuple[str, ...], workflow_id: str
) -> Any:
    """An engine for a command that sets a plan going again: with the in-process queue its
    tools run here, so they must be allowed (refused before anything changes, as `signal`
    refuses: a missing tool would fail every attempt and unwind the plan)."""
    from .operating import _require_handlers

    engine = _engine(store, queue, tools)
    current = engine.get(workflow_id)
    if not engine.has_ended(current.status.value):
        _require_handlers(engine, current)
    return engine


def _warn(warnings: list[Any]) -> None:
    from ..errors import DefinitionError

    for w in warnings[: DefinitionError.SHOWN]:
        click.echo(f"warning: {w}", err=True)
    if len(warnings) > DefinitionError.SHOWN:
        click.echo(f"... and {len(warnings) - DefinitionError.SHOWN} more warnings", err=True)


def _settle(engine: Any, workflow_id: str, timeout: float | None = None) -> Any:
    """With an in-process queue, run what a command set going until the plan ends or waits
    for a person; with workers elsewhere, the stored document as it is."""
    if engine.queue.in_process:
        return engine.wait(workflow_id, timeout)
    return engine.get(workflow_id)


def _show(wf: Any, as_json: bool) -> None:
    from ..plans import items, open_requests, plan_view
    from ..plans.view import versions

    if as_json:
        click.echo(json.dumps(plan_view(wf), indent=2, default=str))
        return
    assert wf.plan is not None
    click.echo(f"{wf.id} {wf.name}: {wf.status.value}, plan version {wf.plan.current.number}")
    for v in versions(wf)[1:]:
        click.echo(f"  v{v['number']} by {v['by'] or '-'}:")
        for line in v["details"]:
            click.echo(f"    {line}")
    for i in items(wf):
        extra = f"  ({i.approval})" if i.approval else ""
        error = f"  {i.error}" if i.error else ""
        click.echo(f"  {i.id:<16} {i.status:<22} todo {i.todo:<12} {i.tool}{extra}{error}")
    for r in open_requests(wf):
        click.echo(
            f"{wf.id} item {r.item} waits for approval of {r.tool} "
            f"{json.dumps(r.args, sort_keys=True)}:\n"
            f"  statesaga approve {wf.id} {r.item} --hash {r.hash} --by NAME"
        )


@click.command()
@tools_option
@click.option("--json", "as_json", is_flag=True, help="print JSON (the default is a table)")
@click.option(
    "--format",
    "shape",
    type=click.Choice(["openai", "anthropic", "mcp", "statesaga"]),
    default="openai",
    show_default=True,
    help="openai: {type: function, function: {name, description, parameters}}; anthropic: "
    "{name, description, input_schema}; mcp: inputSchema; statesaga: with reversibility",
)
@guard
def tools(tools: tuple[str, ...], as_json: bool, shape: str) -> None:
    """List the tools the allowed modules define, as an agent's model would be given them."""
    from ..app import operator_handlers
    from ..plans import tools_in

    _, registry = operator_handlers(tools)
    found = tools_in(registry)
    if as_json:
        listed = [t.definition(shape) for t in found.values()]  # type: ignore[arg-type]
        click.echo(json.dumps(listed, indent=2))
        return
    if not found:
        click.echo("no tools: give a tools module with --tools MODULE", err=True)
        sys.exit(1)
    for t in found.values():
        undo = f" (undo: {t.undo})" if t.undo else ""
        gate = ", needs approval" if t.approval else ""
        click.echo(f"{t.name:<20} {t.reversibility.value}{undo}{gate}  {t.description}")


@click.group()
def plan() -> None:
    """Run, revise and show agents' plans (tool calls made into a durable saga)."""


@plan.command("check")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@tools_option
@guard
def plan_check(plan_file: str, tools: tuple[str, ...]) -> None:
    """Check a plan against the allowed tools, as `plan run` would, without running it."""
    from ..app import operator_handlers
    from ..plans import compile_plan, load_plan, tools_in

    _, registry = operator_handlers(tools)
    spec, lines = load_plan(plan_file)
    compiled = compile_plan(spec, tools_in(registry), lines)
    _warn(compiled.warnings)
    click.echo(f"ok {plan_file}: {len(spec.items)} items, {len(compiled.definition.steps)} steps")


@plan.command("run")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@tools_option
@click.option("--session", default=None, help="the agent's session (`list --session S`)")
@click.option("--by", default=None, help="who starts it (default: the current user)")
@store_option
@queue_option
@click.option("--json", "as_json", is_flag=True, help="print the plan's state as JSON")
@click.option("--timeout", type=SECONDS, default=None, help="give up waiting after S seconds")
@guard
def plan_run(
    plan_file: str,
    tools: tuple[str, ...],
    session: str | None,
    by: str | None,
    store: str | None,
    queue: str | None,
    as_json: bool,
    timeout: float | None,
) -> None:
    """Start a plan (YAML or JSON items: id, tool, args, depends_on, title). With the
    in-process queue it runs here until it ends or waits for an approval. Exit 0 when it
    completed or waits for a person, 1 otherwise."""
    from ..models import WorkflowStatus
    from ..plans import compile_plan, load_plan, start_plan, tools_in

    engine = _engine(store, queue, tools)
    spec, lines = load_plan(plan_file)
    compiled = compile_plan(spec, tools_in(engine.registry), lines)  # before the store opens
    _warn(compiled.warnings)
    check_reachable(engine)
    wf, _ = start_plan(engine, spec, session_id=session, by=by or getpass.getuser())
    click.echo(f"{wf.id} started ({spec.plan}, {len(spec.items)} items)", err=as_json)
    final = _settle(engine, wf.id, timeout)
    _show(final, as_json)
    waiting = any(s.status.value == "WAITING" for s in final.steps)
    done = final.status is WorkflowStatus.COMPLETED
    elsewhere = not queue_url(queue).startswith("inline:") and not engine.has_ended(
        final.status.value
    )
    sys.exit(0 if done or waiting or elsewhere else 1)


@plan.command("revise")
@click.argument("workflow_id")
@click.argument("patch_file", type=click.Path(exists=True, dir_okay=False))
@tools_option
@click.option("--by", default=None, help="who revises it (default: the current user)")
@store_option
@queue_option
@click.option("--json", "as_json", is_flag=True, help="print the plan's state as JSON")
@guard
def plan_revise(
    workflow_id: str,
    patch_file: str,
    tools: tuple[str, ...],
    by: str | None,
    store: str | None,
    queue: str | None,
    as_json: bool,
) -> None:
    """Apply a patch (add: [items], replace: [items], remove: [ids], base_version: N) to a
    running plan. Only items that have not started may change; exit 1 naming the item and
    its state otherwise, with nothing saved."""
    from ..plans import load_patch, revise_plan

    patch, _ = load_patch(patch_file)
    engine = _engine_for(store, queue, tools, workflow_id)
    wf = revise_plan(engine, workflow_id, patch, by=by or getpass.getuser())
    assert wf.plan is not None
    click.echo(
        f"{wf.id} plan version {wf.plan.current.number}: {', '.join(wf.plan.current.changes)}",
        err=as_json,
    )
    _show(_settle(engine, wf.id), as_json)


@plan.command("show")
@click.argument("workflow_id")
@store_option
@click.option("--json", "as_json", is_flag=True, help="print the plan's state as JSON")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="print this version of the plan document instead")  # fmt: skip
@guard
def plan_show(workflow_id: str, store: str | None, as_json: bool, version: int | None) -> None:
    """Show a plan: each item's state, its todo status and approval, its versions."""
    from ..plans.runs import require_plan
    from .running import get_workflow

    wf = get_workflow(store, workflow_id)
    require_plan(wf)
    if version is not None:
        found = [v for v in wf.plan.versions if v.number == version]
        if not found:
            raise click.UsageError(
                f"{wf.id} has plan versions 1 to {wf.plan.current.number}, not {version}"
            )
        click.echo(json.dumps(found[0].spec, indent=2))
        return
    _show(wf, as_json)


@plan.command("diagram")
@click.argument("workflow_id")
@tools_option
@store_option
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="draw this version of the plan (default: the running plan, live)")  # fmt: skip
@click.option("--format", "fmt", default="mermaid", show_default=True,
              help="a renderer: mermaid, dot, svg, ...")  # fmt: skip
@guard
def plan_diagram(
    workflow_id: str, tools: tuple[str, ...], store: str | None, version: int | None, fmt: str
) -> None:
    """Draw a plan as its saga, each item coloured by its status (or one version of it),
    noting what the version changed."""
    from ..app import operator_handlers
    from ..diagram import get_renderer
    from ..plans import tools_in
    from ..plans.diagram import plan_diagram as draw
    from .running import get_workflow

    wf = get_workflow(store, workflow_id)
    _, registry = operator_handlers(tools)
    content = get_renderer(fmt).render(draw(wf, tools_in(registry), version))
    if isinstance(content, bytes):
        sys.stdout.buffer.write(content)
    else:
        click.echo(content, nl=not content.endswith("\n"))


@plan.command("simulate")
@click.option("--seeds", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=None, help="replay this one seed and print its trace")
@guard
def plan_simulate(seeds: int, seed: int | None) -> None:
    """Explore plans under simulated faults, revisions at random points (racing workers),
    approvals (late, duplicated, for changed args) and rejections; check the invariants after
    every event. Prints the first failing trace and exits 1 if any seed breaks one."""
    import logging

    from ..verify.plansim import run_plan_seeds, simulate_plan

    if click.get_current_context().find_root().params.get("log_level") is None:
        logging.getLogger("statesaga").setLevel(logging.ERROR)
    if seed is not None:
        result = simulate_plan(seed)
        click.echo(result.report())
        sys.exit(0 if result.ok else 1)
    summary = run_plan_seeds(range(seeds))
    if summary.failed:
        click.echo(summary.failed[0].report())
        click.echo(f"replay it: statesaga plan simulate --seed {summary.failed[0].seed}")
    click.echo(summary.line())
    sys.exit(0 if summary.ok else 1)


def _answer(
    command: str,
    workflow_id: str,
    item: str,
    by: str,
    store: str | None,
    queue: str | None,
    tools: tuple[str, ...],
    **kw: Any,
) -> None:
    from ..plans import approve, reject

    engine = _engine_for(store, queue, tools, workflow_id)
    if command == "approve":
        wf = approve(engine, workflow_id, item, kw["hash"], by=by, note=kw.get("note"))
    else:
        wf = reject(engine, workflow_id, item, by=by, reason=kw.get("reason") or "")
    click.echo(f"{wf.id} item {item} {command.removesuffix('e')}ed by {by}")
    final = _settle(engine, workflow_id)
    click.echo(f"{final.id} {final.status.value}")
    if not engine.has_ended(final.status.value):
        _show(final, False)


@click.command()
@click.argument("workflow_id")
@click.argument("item")
@click.option("--hash", "hash_", required=True, help="the request's hash (`plan show`)")
@click.option("--by", required=True, help="who approves (kept in the history)")
@click.option("--note", default=None, help="a note kept with the approval")
@tools_option
@store_option
@queue_option
@guard
def approve(
    workflow_id: str,
    item: str,
    hash_: str,
    by: str,
    note: str | None,
    tools: tuple[str, ...],
    store: str | None,
    queue: str | None,
) -> None:
    """Approve ITEM's exact call: refused unless HASH is the one of its current arguments and
    the request is open; an approval is taken once."""
    _answer("approve", workflow_id, item, by, store, queue, tools, hash=hash_, note=note)


@click.command()
@click.argument("workflow_id")
@click.argument("item")
@click.option("--by", required=True, help="who rejects (kept in the history)")
@click.option("--reason", default="", help="why (kept in the history)")
@tools_option
@store_option
@queue_option
@guard
def reject(
    workflow_id: str,
    item: str,
    by: str,
    reason: str,
    tools: tuple[str, ...],
    store: str | None,
    queue: str | None,
) -> None:
    """Reject ITEM's call: the plan unwinds, undoing every item that ran."""
    _answer("reject", workflow_id, item, by, store, queue, tools, reason=reason)


@click.command()
@tools_option
@store_option
@queue_option
@click.option("--http", "http", is_flag=True, help="serve Streamable HTTP instead of stdio")
@click.option("--host", default="127.0.0.1", show_default=True, help="--http: the address")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--approvals",
    is_flag=True,
    help="also serve approve and reject (for a person's MCP client, not an agent's)",
)
@guard
def mcp(
    tools: tuple[str, ...],
    store: str | None,
    queue: str | None,
    http: bool,
    host: str,
    port: int,
    approvals: bool,
) -> None:
    """Serve agents' plans to MCP clients: list_tools, start_plan, revise_plan, plan_status
    (and approve, reject with --approvals), over stdio (default) or Streamable HTTP."""
    from ..plans.mcp_server import build_server

    engine = _engine(store, queue, tools)
    check_reachable(engine)
    server = build_server(engine, approvals=approvals)
    if http:
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")


COMMANDS: tuple[click.Command, ...] = (tools, plan, approve, reject, mcp)
