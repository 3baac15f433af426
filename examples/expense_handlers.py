"""Handlers of the expense claim example (examples/expense.yaml). References are derived from
the idempotency key, so a retried step finds the same claim or payment instead of a second."""

from __future__ import annotations

import hashlib
from typing import Any

from statesaga.context import StepContext
from statesaga.registry import handler


def _ref(prefix: str, ctx: StepContext) -> str:
    return f"{prefix}-{hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()[:6].upper()}"


@handler()
def submit_claim(ctx: StepContext) -> dict[str, Any]:
    return {"claim": _ref("EX", ctx), "amount": ctx.params["amount"]}


@handler()
def withdraw_claim(ctx: StepContext) -> dict[str, Any]:
    return {"withdrawn": ctx.params["claim"]}


@handler()
def pay_claim(ctx: StepContext) -> dict[str, Any]:
    approver = ctx.params.get("approved_by")
    if not approver:
        raise ValueError("a claim is paid only with an approver's name")
    return {"payment": _ref("PAY", ctx), "approved_by": approver}


@handler()
def notify_employee(ctx: StepContext) -> dict[str, Any]:
    return {"sent_to": ctx.params["employee"], "payment": ctx.params["payment"]}
