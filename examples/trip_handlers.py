"""Handlers of the trip booking example. Each returns a small JSON result that later steps and
the compensations can reference. `input.fail_at` names a step that fails (to show the saga
unwinding); `input.flaky` names a step whose first attempt fails (to show a retry)."""

from __future__ import annotations

import hashlib
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler


class BookingError(Exception):
    """Raised by a provider that refuses a booking."""


def _maybe_fail(ctx: StepContext) -> None:
    if ctx.input.get("fail_at") == ctx.step:
        raise BookingError(f"{ctx.step}: provider refused the request")
    if ctx.input.get("flaky") == ctx.step and ctx.attempt == 1:
        raise ConnectionError(f"{ctx.step}: provider timed out, will retry")


def _ref(prefix: str, ctx: StepContext) -> str:
    # Derived from the idempotency key, which is the same for every attempt of the step:
    # a retry after a lost worker finds the same booking instead of making a second one.
    return f"{prefix}-{hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()[:6].upper()}"


@handler()
def reserve_flight(ctx: StepContext) -> dict[str, Any]:
    _maybe_fail(ctx)
    return {
        "booking": _ref("FL", ctx),
        "route": f"{ctx.params['origin']}->{ctx.params['destination']}",
    }


@handler()
def reserve_hotel(ctx: StepContext) -> dict[str, Any]:
    _maybe_fail(ctx)
    return {"booking": _ref("HT", ctx), "nights": ctx.params["nights"]}


@handler()
def reserve_car(ctx: StepContext) -> dict[str, Any]:
    _maybe_fail(ctx)
    return {"booking": _ref("CR", ctx)}


@handler()
def charge_payment(ctx: StepContext) -> dict[str, Any]:
    _maybe_fail(ctx)
    return {"receipt": _ref("RC", ctx), "amount": ctx.params["amount"]}


@handler()
async def send_confirmation(ctx: StepContext) -> dict[str, Any]:
    _maybe_fail(ctx)
    return {"sent_to": ctx.params["email"]}


@handler()
def cancel_flight(ctx: StepContext) -> dict[str, Any]:
    return {"cancelled": ctx.params["booking"]}


@handler()
def cancel_hotel(ctx: StepContext) -> dict[str, Any]:
    return {"cancelled": ctx.params["booking"]}


@handler()
def cancel_car(ctx: StepContext) -> dict[str, Any]:
    return {"cancelled": ctx.params["booking"]}
