"""The trip saga's and the expense claim's handlers, with every booking, payment and
cancellation written to a side-effect ledger (`statesaga.verify.crashcheck.Ledger`, file named
by $STATESAGA_LEDGER), as an external service with idempotency keys would see them. The crash
matrix runs the examples with these handlers and reads the ledger to prove nothing was booked
twice or left booked.

Without $STATESAGA_LEDGER set they behave exactly like `statesaga.examples.trip_handlers` and
`statesaga.examples.expense_handlers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statesaga.context import StepContext
from statesaga.examples import expense_handlers as expense
from statesaga.examples import trip_handlers as trip
from statesaga.registry import handler
from statesaga.verify.crashcheck import Ledger

Action = Callable[[StepContext], Any]


def _book(action: Action, ctx: StepContext, ref_field: str) -> dict[str, Any]:
    result = dict(action(ctx))
    ledger = Ledger.from_env()
    if ledger is not None:
        # A repeat of an operation the service already performed answers with the original
        # reference, so the compensation cancels what was really booked.
        result[ref_field] = ledger.apply(ctx, str(result[ref_field]))
    return result


def _cancel(action: Action, ctx: StepContext, ref_param: str = "booking") -> dict[str, Any]:
    ledger = Ledger.from_env()
    booking = ctx.params.get(ref_param)
    if booking is None and ledger is not None:
        # The action's outcome was never saved (its worker died): ask the service what it
        # booked for this step, as a real client would by its idempotency key.
        booking = ledger.applied_ref(ctx.workflow_id, ctx.step)
        if booking is None:
            return {"cancelled": None, "note": "nothing was booked"}
    result = dict(action(ctx))
    if ledger is not None:
        ledger.undo(ctx, str(booking))
    return result


@handler()
def reserve_flight(ctx: StepContext) -> dict[str, Any]:
    return _book(trip.reserve_flight, ctx, "booking")


@handler()
def reserve_hotel(ctx: StepContext) -> dict[str, Any]:
    return _book(trip.reserve_hotel, ctx, "booking")


@handler()
def reserve_car(ctx: StepContext) -> dict[str, Any]:
    return _book(trip.reserve_car, ctx, "booking")


@handler()
def charge_payment(ctx: StepContext) -> dict[str, Any]:
    return _book(trip.charge_payment, ctx, "receipt")


@handler()
def send_confirmation(ctx: StepContext) -> dict[str, Any]:
    def send(c: StepContext) -> dict[str, Any]:
        trip._maybe_fail(c)
        return {"sent_to": c.params["email"], "message": f"MAIL-{c.workflow_id}"}

    return _book(send, ctx, "message")


@handler()
def cancel_flight(ctx: StepContext) -> dict[str, Any]:
    return _cancel(trip.cancel_flight, ctx)


@handler()
def cancel_hotel(ctx: StepContext) -> dict[str, Any]:
    return _cancel(trip.cancel_hotel, ctx)


@handler()
def cancel_car(ctx: StepContext) -> dict[str, Any]:
    return _cancel(trip.cancel_car, ctx)


@handler()
def submit_claim(ctx: StepContext) -> dict[str, Any]:
    return _book(expense.submit_claim, ctx, "claim")


@handler()
def withdraw_claim(ctx: StepContext) -> dict[str, Any]:
    return _cancel(expense.withdraw_claim, ctx, "claim")


@handler()
def pay_claim(ctx: StepContext) -> dict[str, Any]:
    return _book(expense.pay_claim, ctx, "payment")


@handler()
def notify_employee(ctx: StepContext) -> dict[str, Any]:
    return _book(expense.notify_employee, ctx, "sent_to")
