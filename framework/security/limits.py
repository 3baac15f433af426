"""The sizes statesaga accepts, in one place: what a table, an input or a stored history may
grow to before it is refused (or, for history, compacted).

Each limit is read from an environment variable when set (so an operator can change it
without code), else the default below. The README's "Limits" section lists them.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

#: Seconds: the largest interval, timeout, duration or deadline a table may name (ten years).
#: Bounded so that every sum with "now" is a representable time and every delay is finite.
MAX_SECONDS = 10 * 366 * 86400.0
#: The largest backoff rate: beyond it the first retries already hit any sane max_interval.
MAX_BACKOFF_RATE = 1000.0
#: The most attempts a retry policy may allow.
MAX_ATTEMPTS = 100_000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value > 0 else default


def max_input_bytes() -> int:
    """A workflow's input as JSON text (`STATESAGA_MAX_INPUT_BYTES`, default 1 MiB)."""
    return _env_int("STATESAGA_MAX_INPUT_BYTES", 1024 * 1024)


def max_yaml_bytes() -> int:
    """A chart or definition file (`STATESAGA_MAX_YAML_BYTES`, default 1 MiB)."""
    return _env_int("STATESAGA_MAX_YAML_BYTES", 1024 * 1024)


def max_yaml_depth() -> int:
    """Nesting of mappings and lists in a YAML file or an input (`STATESAGA_MAX_YAML_DEPTH`,
    default 64)."""
    return _env_int("STATESAGA_MAX_YAML_DEPTH", 64)


def max_yaml_nodes() -> int:
    """Values a YAML file may expand to, aliases counted each time they are used
    (`STATESAGA_MAX_YAML_NODES`, default 100,000): an alias bomb stops here."""
    return _env_int("STATESAGA_MAX_YAML_NODES", 100_000)


def max_plan_items() -> int:
    """Items in one agent's plan, revisions included (`STATESAGA_MAX_PLAN_ITEMS`, default
    1,000): a plan is one document, saved whole at every step."""
    return _env_int("STATESAGA_MAX_PLAN_ITEMS", 1000)


def max_history() -> int:
    """History entries kept per workflow (`STATESAGA_MAX_HISTORY`, default 1,000); beyond it
    repeated transitions are folded (see `models.compact_history`)."""
    return _env_int("STATESAGA_MAX_HISTORY", 1000)


def json_problems(value: Any, where: str = "") -> Iterator[str]:
    """What keeps `value` from being plain JSON: non-finite numbers, non-string keys, other
    types. Yields one message per problem, each naming the path inside `value`."""
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, v, depth = stack.pop()
        if depth > max_yaml_depth():
            yield f"{path or 'value'}: nested deeper than {max_yaml_depth()} levels"
            continue
        if isinstance(v, _Refused):
            yield f"{path or 'value'}: {v}"
            continue
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            if not is_unicode(v):
                yield f"{path or 'value'}: {NOT_UNICODE}"
            continue
        if isinstance(v, int):
            if (why := _int_problem(v)) is not None:
                yield f"{path or 'value'}: {why}"
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                yield f"{path or 'value'}: {v} is not a finite number (JSON has no NaN/Infinity)"
            continue
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    yield f"{path or 'value'}: key {k!r} is not a string"
                    continue
                if not is_unicode(k):
                    yield f"{path or 'value'}: key {k!r}: {NOT_UNICODE}"
                    continue
                stack.append((f"{path}.{k}" if path else k, item, depth + 1))
            continue
        if isinstance(v, list | tuple):
            for i, item in enumerate(v):
                stack.append((f"{path}[{i}]", item, depth + 1))
            continue
        yield f"{path or 'value'}: {type(v).__name__} is not a JSON value"


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON text (what a store keeps)."""
    return len(json.dumps(value, separators=(",", ":"), default=str).encode("utf-8"))


#: Why a str cannot be stored: a lone surrogate has no UTF-8 (Python makes them of bytes that
#: are not UTF-8, in file names, argv and environment variables).
NOT_UNICODE = "text that is not Unicode (a lone surrogate, e.g. bytes read as text)"


def is_unicode(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (has no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_problem(value: int) -> str | None:
    """Why an integer cannot be stored, or None. JSON has no limit, but every reader of a
    stored document (Python's json, pydantic's) refuses an integer longer than Python's
    int/str conversion limit (4,300 digits by default): a document holding one is written
    and then cannot be read back by anyone, its workflow lost."""
    limit = sys.get_int_max_str_digits()
    # 3.32 bits per digit: below 3 bits per digit of the limit, no need to compare.
    if not limit or value.bit_length() <= 3 * limit or abs(value) < 10**limit:
        return None
    return f"an integer of more than {limit} digits cannot be stored (pass it as text)"


class _Refused(str):
    """A number as it was written that JSON or a float cannot carry, kept in place while the
    text is parsed so that the refusal can name where it is."""


def _number(text: str) -> Any:
    value = float(text)
    # 1e400 parses to inf: stored, it would come back as null (or not at all).
    if math.isfinite(value):
        return value
    return _Refused(f"{text} is not a finite number (too large for a float)")


def _integer(text: str) -> Any:
    limit = sys.get_int_max_str_digits()
    if limit and len(text.lstrip("-")) > limit:
        return _Refused(
            f"an integer of more than {limit} digits cannot be stored (pass it as text)"
        )
    return int(text)


def _constant(name: str) -> Any:
    return _Refused(f"{name} is not JSON (use a number or null)")


def strict_json_loads(text: str) -> Any:
    """json.loads for everything statesaga takes in (an input, a payload, a request body): it
    refuses NaN, Infinity, -Infinity and a number too large for a float (1e400), which
    Python's json accepts and a store would keep as null, and values nested deeper than the
    limit, and an integer too long to read back. Raises ValueError naming the first field
    at fault."""
    value = marked_json_loads(text)
    for problem in json_problems(value):
        raise ValueError(problem)
    return value


def marked_json_loads(text: str | bytes, *, as_written: bool = True) -> Any:
    """json.loads with what statesaga refuses (NaN, the infinities, 1e400, an integer too
    long to read back) left in place as markers that json_problems names with their path.
    `as_written=False` for text statesaga wrote from Python values: NaN and the infinities
    are read as the floats they were, and named as such."""
    if not as_written:
        return json.loads(text, parse_int=_integer)
    return json.loads(text, parse_constant=_constant, parse_float=_number, parse_int=_integer)


__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BACKOFF_RATE",
    "MAX_SECONDS",
    "NOT_UNICODE",
    "is_unicode",
    "json_problems",
    "json_size",
    "marked_json_loads",
    "max_history",
    "max_input_bytes",
    "max_plan_items",
    "max_yaml_bytes",
    "max_yaml_depth",
    "max_yaml_nodes",
    "strict_json_loads",
]
