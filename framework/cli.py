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


__all__ = ["main", "Path"]
