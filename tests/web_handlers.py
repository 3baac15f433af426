"""Handlers of the test saga the dashboard tests drive (tests/web_order.yaml).

Every step sleeps `input.delay` seconds, so a browser can watch it run and cancel it midway.
The step named by `input.fail_at` fails while the file `input.fail_file` exists: a test makes
a saga halt, removes the file (the "fix") and restarts it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler


class OrderError(Exception):
    """Raised by a step told to fail."""


@handler()
def order_step(ctx: StepContext) -> dict[str, Any]:
    time.sleep(float(ctx.input.get("delay", 0)))
    flag = ctx.input.get("fail_file")
    if ctx.input.get("fail_at") == ctx.step and (flag is None or Path(flag).exists()):
        raise OrderError(f"{ctx.step}: the warehouse refused the order")
    return {"done": ctx.step, "ref": ctx.idempotency_key}


@handler()
def undo_order_step(ctx: StepContext) -> dict[str, Any]:
    return {"undone": ctx.step}
