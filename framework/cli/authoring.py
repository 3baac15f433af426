"""The authoring room of the CLI: commands for whoever writes state tables and workflow
definitions (`validate`, `schema`, `diagram`); they read files, and a store only to draw a
stored workflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .._yaml import load_yaml_file
from ..charts.chart import chart_from_data, chart_json_schema
from ..definitions.load import definition_from_data, is_definition
from ..errors import DefinitionError, StatesagaError
from .options import guard, handlers_option
from .running import get_workflow


def validate_file(path: str) -> Any:
    """Load a chart or a workflow definition (told apart by `chart:` / `workflow:`)."""
    data, lines = load_yaml_file(path)
    if is_definition(data):
        return definition_from_data(data, lines, path)
    return chart_from_data(data, lines, path)


def check_handler_hints(loaded: Any, handlers: tuple[str, ...]) -> None:
    """A definition's `handlers:` must each name an allowed module that can be found; then
    its steps' handlers must be registered (only allowed modules are imported to see)."""
    from ..definitions.load import WorkflowDefinition
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


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@handlers_option
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


@click.command()
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
        from ..definitions.spec import definition_json_schema

        out = definition_json_schema()
    else:
        out = chart_json_schema()
    click.echo(json.dumps(out, indent=2, sort_keys=True))


@guard
def _input_schema(path: str) -> None:
    from ..definitions.load import load_definition

    d = load_definition(path)
    if d.spec.input is None:
        raise click.UsageError(f"{path} declares no `input:` schema")
    click.echo(json.dumps(d.spec.input.json_schema(f"{d.name} input"), indent=2))


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


@click.command()
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
@guard
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
        wf = get_workflow(store_url, instance)
        from ..definitions.load import load_definition

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


COMMANDS: tuple[click.Command, ...] = (validate, schema, diagram)
