"""YAML loading that remembers where every value came from, so errors can name file and line."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
import yaml.composer
import yaml.reader

from .errors import DefinitionError, Problem
from .security.limits import max_yaml_bytes, max_yaml_depth, max_yaml_nodes

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


_TAG = "tag:yaml.org,2002:"
#: Explicit tags a table may use: the YAML core schema's. Anything else (`!!python/...`,
#: `!custom`) is refused, never constructed nor ignored.
_ALLOWED_TAGS = frozenset(
    _TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)
#: YAML 1.1 words that the core schema (1.2) reads as text, not as booleans.
YAML11_BOOLS = frozenset(
    w for b in ("y", "yes", "n", "no", "on", "off") for w in (b, b.title(), b.upper())
)


class _CoreLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 core-schema scalars: only true/false are booleans (so a
    state named ON or a value `no` stays text), ints are decimal, 0o octal or 0x hex (010 is
    ten, 1:30 is text), and nesting is bounded while the document is composed."""

    yaml_implicit_resolvers: dict[Any, Any] = {}
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > max_yaml_depth():
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {max_yaml_depth()} levels (STATESAGA_MAX_YAML_DEPTH)",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


for _first, _resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
    for _tag, _regexp in _resolvers:
        if _tag in (_TAG + "null", _TAG + "timestamp"):
            _CoreLoader.yaml_implicit_resolvers.setdefault(_first, []).append((_tag, _regexp))
_CoreLoader.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreLoader.add_implicit_resolver(
    _TAG + "int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_CoreLoader.add_implicit_resolver(
    _TAG + "float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreLoader.add_constructor(_TAG + "int", _CoreLoader.construct_core_int)


class _Builder:
    """Turns a composed node graph into plain data, recording lines, and refusing what a
    table never needs: foreign tags, recursive aliases, non-finite numbers, and more values
    than the limit (aliases counted each time they are used, so an alias bomb stops)."""

    def __init__(self, loader: _CoreLoader, lines: LineMap) -> None:
        self.loader = loader
        self.lines = lines
        self.problems: list[Problem] = []
        self.budget = max_yaml_nodes()
        self.active: set[int] = set()

    def at(self, node: yaml.Node, message: str, loc: Loc = ()) -> DefinitionError:
        field = ".".join(str(p) for p in loc) or None
        line = node.start_mark.line + 1
        return DefinitionError([Problem(message, self.lines.file, line, field)])

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self.at(
                node,
                f"more than {max_yaml_nodes()} values once aliases are expanded "
                "(STATESAGA_MAX_YAML_NODES)",
                loc,
            )
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(_TAG, "!!", 1)
            raise self.at(node, f"the tag {tag} is not allowed (plain YAML values only)", loc)
        if id(node) in self.active:
            raise self.at(node, "a recursive alias (an anchor used inside itself)", loc)
        self.lines.set(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, loc)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        try:
            value = self.loader.construct_object(node)
        except Exception as exc:  # PyYAML's constructors fail in many ways on bad scalars
            raise self.at(node, f"not a valid {node.tag.removeprefix(_TAG)}: {exc}", loc) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise self.at(node, f"{node.value} is not a finite number", loc)
        return value

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.build(key_node, loc)
            if not isinstance(key, str | int | float | bool):
                self.problems.append(
                    self.lines.problem(loc, f"mapping key {key!r} is not a scalar")
                )
                continue
            if key in out:
                self.problems.append(
                    Problem(
                        f"duplicate key {key!r}",
                        self.lines.file,
                        key_node.start_mark.line + 1,
                        ".".join(str(p) for p in (*loc, key)),
                    )
                )
            child: Loc = (*loc, str(key))
            self.lines.set(child, key_node.start_mark.line + 1)
            out[key] = self.build(value_node, child)
        return out


def load_yaml_text(text: str, file: str | None = None) -> tuple[Any, LineMap]:
    """Parse YAML text (core schema); raise DefinitionError with file:line on syntax errors,
    duplicate keys, foreign tags, or past the size, depth and alias limits."""
    lines = LineMap(file)
    if len(text) > max_yaml_bytes():
        raise DefinitionError(
            [Problem(f"larger than {max_yaml_bytes()} bytes (STATESAGA_MAX_YAML_BYTES)", file)]
        )
    try:
        loader = _CoreLoader(text)
    except yaml.reader.ReaderError as exc:
        at = text.count("\n", 0, max(exc.position, 0)) + 1
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        raise DefinitionError(
            [Problem(f"YAML error: the character {what} is not allowed", file, at)]
        ) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise DefinitionError(
                [Problem(f"YAML syntax error: {exc.problem or exc}", file, line)]
            ) from None
        except yaml.YAMLError as exc:
            raise DefinitionError([Problem(f"YAML error: {exc}", file)]) from None
        except RecursionError:  # a parser limit below our depth limit
            raise DefinitionError([Problem("nested too deeply to parse", file)]) from None
        if node is None:
            raise DefinitionError([Problem("the file is empty", file, 1)])
        builder = _Builder(loader, lines)
        data = builder.build(node, ())
    finally:
        loader.dispose()  # the node graph and constructed values go with this load
        loader.constructed_objects.clear()
    if builder.problems:
        raise DefinitionError(builder.problems)
    return data, lines


def load_yaml_file(path: str | Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file, naming the file in every error."""
    p = Path(path)
    limit = max_yaml_bytes()
    try:
        with p.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise DefinitionError([Problem(f"cannot read file: {exc.strerror}", str(p))]) from None
    if len(raw) > limit:
        raise DefinitionError(
            [Problem(f"larger than {limit} bytes (STATESAGA_MAX_YAML_BYTES)", str(p))]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DefinitionError(
            [Problem(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", str(p), line)]
        ) from None
    return load_yaml_text(text, str(p))


_TYPE_TAG = re.compile(r"^(function-\w+|[a-z_]+\[.*\]|str|int|float|bool|none|dict|list|tuple)$")


def pydantic_problems(
    exc: Any, lines: LineMap, patterns: Mapping[str, str] | None = None
) -> list[Problem]:
    """Translate a pydantic ValidationError into located problems; `patterns` says in words
    what a field's pattern asks (instead of the regular expression)."""
    problems = []
    seen: set[Loc] = set()
    for err in exc.errors():
        # A union's members appear in the location (`type.literal[...]`, `tuple[...]`): drop
        # them, and report the first member's message once per field.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _TYPE_TAG.match(p)))
        if loc in seen:
            continue
        seen.add(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        elif err["type"] == "missing":
            msg = f"missing required key {loc[-1]!r}" if loc else "missing required key"
        elif err["type"] == "string_pattern_mismatch" and patterns:
            words = patterns.get(str(err.get("ctx", {}).get("pattern")))
            if words:
                msg = f"{words}, not {str(err.get('input'))[:60]!r}"
        elif err["type"] == "bool_type" and err.get("input") in YAML11_BOOLS:
            msg += f" (tables are YAML 1.2: write true or false, not {err['input']})"
        problems.append(lines.problem(loc, msg))
    return problems
