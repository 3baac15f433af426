"""Handlers for the operations tests (CLI refusals, the chaos run on RQ), imported by name by
real `statesaga worker` processes (PYTHONPATH=tests) and by in-process CLI runs.

The chaos saga (`chaos_saga()`) is a user's saga as the issue describes it: two parallel
fetches (one without a compensation: a read), a budget reservation, a supplier booking, the
pivot (the charge) and two retried steps after it. Every effect goes through the side-effect
ledger (`statesaga.verify.crashcheck.Ledger`, file named by $STATESAGA_LEDGER), which stands for
services that honour idempotency keys, so a test can check each was applied at most once net
and none is left on a compensated workflow.

Inputs steer failures: `fail_at` names a step that fails for good (the saga unwinds),
`flaky` names steps whose first attempt fails (a retry after a backoff: RQ's scheduler).
"""

from __future__ import annotations

import os
import time
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler
from statesaga.verify.crashcheck import Ledger

#: Seconds each effect takes: long enough that SIGKILLs land inside handlers too.
WORK = float(os.environ.get("OPS_TEST_WORK", "0.05"))


class Refused(Exception):
    """A service said no; retrying will not change it."""


class Glitch(Exception):
    """A transient failure: the next attempt succeeds."""


def _ledger() -> Ledger:
    ledger = Ledger.from_env()
    if ledger is None:
        raise RuntimeError("STATESAGA_LEDGER is not set")
    return ledger


def _effect(ctx: StepContext, prefix: str) -> dict[str, Any]:
    if ctx.input.get("fail_at") == ctx.step:
        raise Refused(f"{ctx.step} refused")
    if ctx.step in ctx.input.get("flaky", ()) and ctx.attempt == 1:
        raise Glitch(f"{ctx.step} glitch")
    time.sleep(WORK)
    ref = _ledger().apply(ctx, f"{prefix}-{ctx.workflow_id}-{ctx.attempt_key}")
    return {"ref": ref}


def _undo(ctx: StepContext) -> dict[str, Any]:
    ledger = _ledger()
    ref = ctx.params.get("ref") or ledger.applied_ref(ctx.workflow_id, ctx.step)
    if ref is None:  # the action's outcome was never saved and the service has nothing
        return {"undone": None}
    time.sleep(WORK)
    ledger.undo(ctx, str(ref))
    return {"undone": ref}


@handler()
def fetch_rates(ctx: StepContext) -> dict[str, Any]:
    """A read: nothing to undo, so the step has no compensation."""
    time.sleep(WORK)
    return {"rate": 1.1}


@handler()
def hold_inventory(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "INV")


@handler()
def reserve_budget(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "BUD")


@handler()
def book_supplier(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "SUP")


@handler()
def charge(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "CHG")


@handler()
def notify(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "NTF")


@handler()
def archive(ctx: StepContext) -> dict[str, Any]:
    return _effect(ctx, "ARC")


@handler()
def release(ctx: StepContext) -> dict[str, Any]:
    return _undo(ctx)


@handler()
def undo_broken(ctx: StepContext) -> dict[str, Any]:
    """A compensation that can never succeed: the saga must halt FAILED."""
    raise Refused(f"cannot undo {ctx.step}")


def chaos_saga(retry_interval: float = 1.0) -> dict[str, Any]:
    """The seven-step saga of the chaos test, as a definition dict."""
    undo = {"action": "release", "params": {"ref": "${result.ref}"}}
    retry = {"max_attempts": 4, "initial_interval": retry_interval, "backoff_rate": 1.5}
    return {
        "workflow": "chaos_order",
        "version": 1,
        "handlers": ["ops_handlers"],
        "strategy": "backward",
        "defaults": {
            "retry": {**retry, "non_retryable": ["Refused"]},
            "timeout": 20,
        },
        "steps": [
            {"name": "fetch_rates", "action": "fetch_rates"},
            {"name": "hold_inventory", "action": "hold_inventory", "compensation": undo},
            {
                "name": "reserve_budget",
                "action": "reserve_budget",
                "depends_on": ["fetch_rates", "hold_inventory"],
                "compensation": undo,
            },
            {
                "name": "book_supplier",
                "action": "book_supplier",
                "depends_on": ["reserve_budget"],
                "compensation": undo,
            },
            {
                "name": "charge",
                "action": "charge",
                "pivot": True,
                "depends_on": ["book_supplier"],
            },
            {"name": "notify", "action": "notify", "depends_on": ["charge"]},
            {"name": "archive", "action": "archive", "depends_on": ["notify"]},
        ],
    }
