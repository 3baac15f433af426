"""The `statesaga` command line: the `main` group and the registration of its commands, which
live in three rooms by who uses them: statesaga.cli.authoring (writing tables: validate,
schema, diagram), statesaga.cli.running (running and watching workflows: run, status, list,
demo, simulate) and statesaga.cli.operating (keeping them going: worker, recover, cancel,
signal, restart, serve, ...) and statesaga.cli.planning (agents' plans: tools, plan, approve,
reject); the options and error handling they share are
statesaga.cli.options. Wiring lives elsewhere: engines are built by statesaga.app, the recovery
loop is statesaga.runtime.recovery's.

Exit codes: 0 ok, 1 a table is invalid, a store or queue cannot be reached or read, or a
workflow did not complete, 2 usage errors (click's own convention), including an input that is
not JSON or does not fit the definition."""

from __future__ import annotations

import functools
import logging
from pathlib import PurePath
from typing import Any

import click

from ..errors import StatesagaError
from ..observability.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, configure_logging
from ..resources import __version__
from ..security.limits import is_unicode
from . import authoring, operating, planning, running
from .authoring import check_handler_hints, validate_file
from .options import fail


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


#: Commands that run or move workflows: they export traces and metrics when OTEL_* says so.
_OBSERVED = frozenset({"run", "worker", "recover", "serve", "cancel", "signal", "restart"})
#: Commands that are one operation: a span of their own, linked to the workflow's trace.
_OPERATIONS = frozenset({"run", "cancel", "signal", "restart"})


def _observed(command: click.Command) -> None:
    """Set up OpenTelemetry when the command itself runs: after its options are parsed, so
    `--help` or a usage error prints nothing before click's own text."""
    callback = command.callback
    assert callback is not None
    name = command.name

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        from ..observability.otel import configure_from_env

        # A worker configures its own (it may serve metrics on a port: see `worker`).
        if name != "worker":
            try:
                done = configure_from_env(prometheus=name == "serve")
            except StatesagaError as exc:
                fail(str(exc))
            if done:
                logging.getLogger("statesaga.otel").info("OpenTelemetry: %s", "; ".join(done))
        if name in _OPERATIONS:
            from ..observability.tracing import operation

            # Ended when the command ends (the root context closes after it, exit or not).
            ctx = click.get_current_context().find_root()
            ctx.with_resource(operation(f"statesaga {name}"))
        return callback(*args, **kwargs)

    command.callback = run


def _text_only(command: click.Command) -> None:
    """Refuse an argument, option or environment value that is not UTF-8 text, for `command`
    and the commands of a group: Python makes such bytes into lone surrogates, which no
    store, log line or terminal can take (a traceback on the save, or on the print)."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _text_only(sub)
    callback = command.callback
    if callback is None:
        return

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        for param in ctx.command.params:
            values = kwargs.get(param.name or "")
            for value in values if isinstance(values, list | tuple) else (values,):
                if isinstance(value, str | PurePath) and not is_unicode(str(value)):
                    raise click.BadParameter(
                        "not UTF-8 text (bytes that are not UTF-8, as in some file names)",
                        ctx=ctx,
                        param=param,
                    )
        return callback(*args, **kwargs)

    command.callback = run


for _room in (authoring, running, operating, planning):
    for _command in _room.COMMANDS:
        if _command.name in _OBSERVED | _OPERATIONS:
            _observed(_command)
        _text_only(_command)
        main.add_command(_command)

__all__ = ["check_handler_hints", "main", "validate_file"]
