"""YAML loading that remembers where every value came from, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import DefinitionError, Problem

Loc = tuple[str | int, ...]


class LineMap:
    """Maps a path into the loaded data (keys and list indexes) to its 1-based line."""

    def __init__(self, file: str | None) -> None:
        self.file = file
        self._lines: dict[Loc, int] = {}

    def set(self, loc: Loc, line: int) -> None:
        self._lines.setdefault(loc, line)

    def line(self, loc: Loc) -> int | None:
        """The line of loc, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while True:
            if loc in self._lines:
                return self._lines[loc]
            if not loc:
                return None
            loc = loc[:-1]

    def problem(self, loc: Loc, message: str) -> Problem:
        field = ".".join(str(p) for p in loc) or None
        return Problem(message=message, file=self.file, line=self.line(loc), field=field)


def _construct(node: yaml.Node, loc: Loc, lines: LineMap, problems: list[Problem]) -> Any:
    lines.set(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, loc, lines, problems)
            if not isinstance(key, str | int | float | bool):
                problems.append(lines.problem(loc, f"mapping key {key!r} is not a scalar"))
                continue
            if key in out:
                problems.append(
                    Problem(
                        f"duplicate key {key!r}",
                        lines.file,
                        key_node.start_mark.line + 1,
                        ".".join(str(p) for p in (*loc, key)),
                    )
                )
            child: Loc = (*loc, str(key))
            lines.set(child, key_node.start_mark.line + 1)
            out[key] = _construct(value_node, child, lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*loc, i), lines, problems) for i, item in enumerate(node.value)]
    # Scalars: let the safe constructor decide the type (int, bool, null, str...).
    return yaml.SafeLoader.construct_object(_SCALAR_LOADER, node)  # type: ignore[arg-type]


_SCALAR_LOADER = yaml.SafeLoader("")


def load_yaml_text(text: str, file: str | None = None) -> tuple[Any, LineMap]:
    """Parse YAML text; raise DefinitionError with file:line on syntax errors or duplicate keys."""
    lines = LineMap(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DefinitionError(
            [Problem(f"YAML syntax error: {exc.problem or exc}", file, line)]
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(f"YAML error: {exc}", file)]) from None
    if node is None:
        raise DefinitionError([Problem("the file is empty", file, 1)])
    problems: list[Problem] = []
    data = _construct(node, (), lines, problems)
    if problems:
        raise DefinitionError(problems)
    return data, lines


def load_yaml_file(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file, naming the file in every error."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError([Problem(f"cannot read file: {exc.strerror}", str(p))]) from None
    return load_yaml_text(text, str(p))


def pydantic_problems(exc: Any, lines: LineMap) -> list[Problem]:
    """Translate a pydantic ValidationError into located problems."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        elif err["type"] == "missing":
            msg = f"missing required key {loc[-1]!r}" if loc else "missing required key"
        problems.append(lines.problem(loc, msg))
    return problems
