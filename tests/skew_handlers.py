"""Handlers for the clock-skew test (tests/test_clock_skew.py), imported by name by real
`statesaga worker` processes (PYTHONPATH=tests), some of them under `faketime`.

`long_step` runs longer than the recovery loop's heartbeat timeout, so only a live heartbeat
keeps it from being taken for lost; `glitch_once` fails its first attempt, so its retry waits
for a backoff that the RQ scheduler ends. Every effect goes through the side-effect ledger.
"""

from __future__ import annotations

import os
import time
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler
from statesaga.verify.crashcheck import Ledger

#: Seconds `long_step` takes.
WORK = float(os.environ.get("SKEW_TEST_WORK", "8"))


class Glitch(Exception):
    """A transient failure: the next attempt succeeds."""


def _apply(ctx: StepContext) -> dict[str, Any]:
    ledger = Ledger.from_env()
    if ledger is None:
        raise RuntimeError("STATESAGA_LEDGER is not set")
    return {"ref": ledger.apply(ctx, f"{ctx.step}-{ctx.workflow_id}-{ctx.attempt_key}")}


@handler()
def long_step(ctx: StepContext) -> dict[str, Any]:
    time.sleep(WORK)
    return _apply(ctx)


@handler()
def glitch_once(ctx: StepContext) -> dict[str, Any]:
    if ctx.attempt == 1:
        raise Glitch(f"{ctx.step} glitch")
    return _apply(ctx)


def skew_saga(retry_interval: float) -> dict[str, Any]:
    return {
        "workflow": "skewed",
        "version": 1,
        "handlers": ["skew_handlers"],
        "defaults": {
            "timeout": 60,
            "retry": {
                "max_attempts": 3,
                "initial_interval": retry_interval,
                "backoff_rate": 1.0,
                "jitter": 0.0,
            },
        },
        "steps": [
            {"name": "long", "action": "long_step"},
            {"name": "flaky", "action": "glitch_once", "depends_on": ["long"]},
        ],
    }
