"""The no-op handler `statesaga worker` processes of the benchmarks import by name
(`--handlers benchmarks._noop_handlers`, run from the repository root)."""

from __future__ import annotations

from statesaga.context import StepContext
from statesaga.registry import handler


@handler()
def noop(ctx: StepContext) -> None:
    return None
