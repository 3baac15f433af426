"""Handlers for the distributed tests, imported by real `statesaga worker` processes.

They are the trip example's handlers (same names), each first appending one line to a ledger
file (`$STATESAGA_TEST_LEDGER`): the side effect a test counts to prove that every step and
every compensation ran exactly as many times as the stored attempts say. One short line per
write with O_APPEND, so lines from several worker processes never interleave.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from statesaga.context import StepContext
from statesaga.examples import trip_handlers as trip
from statesaga.registry import handler


def _record(ctx: StepContext, action: str) -> None:
    line = json.dumps(
        {
            "wf": ctx.workflow_id,
            "step": ctx.step,
            "action": action,
            "attempt": ctx.attempt,
            "undo": ctx.compensating,
            "pid": os.getpid(),
            "at": time.time(),
        }
    )
    fd = os.open(os.environ["STATESAGA_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@handler()
def reserve_flight(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "reserve_flight")
    return trip.reserve_flight(ctx)


@handler()
def reserve_hotel(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "reserve_hotel")
    return trip.reserve_hotel(ctx)


@handler()
def reserve_car(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "reserve_car")
    return trip.reserve_car(ctx)


@handler()
def charge_payment(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "charge_payment")
    return trip.charge_payment(ctx)


@handler()
async def send_confirmation(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "send_confirmation")
    return await trip.send_confirmation(ctx)


@handler()
def cancel_flight(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "cancel_flight")
    return trip.cancel_flight(ctx)


@handler()
def cancel_hotel(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "cancel_hotel")
    return trip.cancel_hotel(ctx)


@handler()
def cancel_car(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "cancel_car")
    return trip.cancel_car(ctx)


@handler()
def flaky_once(ctx: StepContext) -> dict[str, Any]:
    """Fails its first attempt: the retry test's step."""
    _record(ctx, "flaky_once")
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails, the retry succeeds")
    return {"attempt": ctx.attempt}


@handler()
def wait_for_release(ctx: StepContext) -> dict[str, Any]:
    """Blocks until the file `$STATESAGA_TEST_RELEASE` exists: a step that is in flight for as
    long as the test wants (the graceful shutdown test)."""
    _record(ctx, "wait_for_release")
    release = os.environ["STATESAGA_TEST_RELEASE"]
    while not os.path.exists(release):
        time.sleep(0.02)
    return {"released": True}


@handler()
def noop(ctx: StepContext) -> dict[str, Any]:
    _record(ctx, "noop")
    return {}
