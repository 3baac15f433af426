"""`${...}` params: the references a step's params hold, and their values resolved from the
input, earlier steps' results and (in a compensation) the step's own result."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import StepSpec


_REF = re.compile(r"\$\{([^}]+)\}")


def references(value: Any) -> list[str]:
    """Every `${...}` path in a params value (nested dicts and lists included)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, str) and "${" in v:
            out.extend(m.group(1).strip() for m in _REF.finditer(v))
    return out


def param_sets(step: StepSpec) -> list[tuple[str, dict[str, Any]]]:
    """The params of a step's action and of its compensation, each with how to name it."""
    sets = [("params", dict(step.params))]
    if step.compensation is not None:
        sets.append(("compensation params", dict(step.compensation.params)))
    return sets


def resolve_params(
    value: Any, scope: Mapping[str, Any], missing_ok: set[str] | frozenset[str] = frozenset()
) -> Any:
    """Replace `${input.x}`, `${steps.NAME.key}` or `${result.key}` with values from scope.

    A string that is exactly one reference takes the referenced value (any JSON type);
    references inside longer strings are formatted as text. Unknown paths raise KeyError,
    except under a root named in `missing_ok`, which resolve to None.
    """
    if isinstance(value, dict):
        return {k: resolve_params(v, scope, missing_ok) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_params(v, scope, missing_ok) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return lookup(whole.group(1), scope, missing_ok)
    return _REF.sub(lambda m: str(lookup(m.group(1), scope, missing_ok)), value)


def lookup(path: str, scope: Mapping[str, Any], missing_ok: Set[str] = frozenset()) -> Any:
    if path.strip().split(".")[0] in missing_ok:
        try:
            return lookup(path, scope)
        except KeyError:
            return None
    cur: Any = scope
    for part in path.strip().split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(f"reference ${{{path}}}: {part!r} not found")
    return cur
