"""The options, parameter types and error handling every `statesaga` command shares: the
store, queue and --handlers options, JSON arguments, a number of seconds, and `guard`, which
turns a framework error into one line and an exit code. A module of its own so the three rooms
(authoring, running, operating) and the `main` group import it without importing each other."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import DefinitionError, StatesagaError


def fail(message: str, code: int = 1) -> None:
    from ..security.redact import redact

    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


handlers_option = click.option(
    "--handlers",
    "handlers",
    multiple=True,
    metavar="MODULE",
    help="allow this handler module (repeat it, or separate with commas; default: "
    "$STATESAGA_HANDLERS); also allowed: [tool.statesaga] handlers in ./pyproject.toml and "
    "installed packages' statesaga.handlers entry points. Nothing else is imported.",
)


#: The plans' name for the same allow-list: a plan's items name tools, which are handlers.
tools_option = click.option(
    "--tools",
    "--handlers",
    "tools",
    multiple=True,
    metavar="MODULE",
    help="allow this tools (handler) module; repeat it, or separate with commas (default: "
    "$STATESAGA_HANDLERS). Nothing else is imported.",
)


def guard(func: Any) -> Any:
    """Show framework errors as one clean line instead of a traceback."""
    import functools

    from ..errors import InputError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DefinitionError as exc:
            shown, more = exc.shown()
            for p in shown:
                click.echo(str(p), err=True)
            if more:
                click.echo(f"... and {more} more problems", err=True)
            sys.exit(2 if isinstance(exc, InputError) else 1)
        except StatesagaError as exc:
            fail(str(exc))
        except Exception as exc:
            from ..runtime.outage import is_outage

            if is_outage(exc):
                fail(f"cannot reach the store or queue: {type(exc).__name__}: {exc}")
            why = _backend_error(exc)
            if why is None:
                raise
            fail(why)

    return wrapper


def _backend_error(exc: BaseException) -> str | None:
    """One line for what a store or queue backend raised (the server cannot be reached, a
    password is refused, a file cannot be opened), or None for a bug that deserves its
    traceback."""
    from ..errors import BackendError

    if isinstance(exc, BackendError):  # as its adapter declared it
        return BackendError.line(exc)
    if isinstance(exc, OSError):
        target = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{':' if target else ''}{target}"
    return None


def json_arg(value: str, option: str) -> Any:
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


def load_input(value: str | None) -> dict[str, Any]:
    """`--input '{"a": 1}'`, `--input @file.json` or `--input @-` (standard input)."""
    if not value:
        return {}
    data = json_arg(value, "--input")
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


store_option = click.option(
    "--store",
    "store",
    default=None,
    envvar="STATESAGA_STORE",
    show_envvar=True,
    help="store URL (default: sqlite:///statesaga.db)",
)


queue_option = click.option(
    "--queue",
    "queue",
    default=None,
    envvar="STATESAGA_QUEUE",
    show_envvar=True,
    help="queue URL (default: inline://)",
)
