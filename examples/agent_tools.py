"""Tools of the travel agent example (examples/agent_planner.py, examples/trip_plan.yaml):
stand-ins for a booking API, so the example runs offline. Each says how it is undone: the
search is read-only, bookings are reversible (each names its cancel), the payment is
irreversible and so waits for a person's approval of its exact amount.

An undo is a plain handler (not a tool an agent may call): it gets the item's arguments and,
in `ctx.result`, what the tool returned. Each effect and undo is appended, with the call's
idempotency key, to the JSON-lines file $STATESAGA_TOOLS_LEDGER when it is set (tests read it
to check what ran, and how often); $STATESAGA_TOOLS_DELAY makes each call take that many
seconds, to watch a plan run (or kill a worker in the middle of a call)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, Field
from statesaga.context import StepContext
from statesaga.plans import tool
from statesaga.registry import handler


class SoldOut(Exception):
    """Raised when what is asked for cannot be booked (not retried by a plan's policy)."""


def _ledger(event: str, ctx: StepContext, **data: Any) -> None:
    time.sleep(float(os.environ.get("STATESAGA_TOOLS_DELAY", "0")))
    path = os.environ.get("STATESAGA_TOOLS_LEDGER")
    if not path:
        return
    line = {
        "event": event,
        "workflow": ctx.workflow_id,
        "step": ctx.step,
        "key": ctx.idempotency_key,
        "attempt": ctx.attempt,
        "args": dict(ctx.params),
        **data,
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


class Search(BaseModel):
    origin: str = Field(min_length=3, max_length=3, description="IATA airport code")
    destination: str = Field(min_length=3, max_length=3, description="IATA airport code")
    date: str = Field(description="YYYY-MM-DD")


@tool(read_only=True)
def search_flights(args: Search, ctx: StepContext) -> dict[str, Any]:
    """Find flights between two airports on a date."""
    _ledger("read", ctx)
    return {"flights": [{"flight": "SS101", "price": 320}, {"flight": "SS205", "price": 280}]}


class Flight(BaseModel):
    flight: str = Field(min_length=2)
    passenger: str = Field(min_length=1)


@tool(undo="cancel_flight")
def book_flight(args: Flight, ctx: StepContext) -> dict[str, Any]:
    """Book a seat on a flight."""
    _ledger("apply", ctx)
    return {"booking": f"FL-{ctx.idempotency_key[-12:]}", "flight": args.flight}


@handler()
def cancel_flight(ctx: StepContext) -> dict[str, Any]:
    _ledger("undo", ctx, undoes=ctx.idempotency_key.removesuffix(":undo"))
    return {"cancelled": (ctx.result or {}).get("booking")}


class Hotel(BaseModel):
    hotel: str = Field(min_length=1)
    nights: int = Field(ge=1, le=30)


#: Hotels the stand-in API says are full.
FULL = frozenset({"Grand"})


@tool(undo="cancel_hotel")
def book_hotel(args: Hotel, ctx: StepContext) -> dict[str, Any]:
    """Book a hotel room. A full hotel is not an error: the result says so, for the agent to
    choose another."""
    if args.hotel in FULL:
        _ledger("read", ctx)
        return {"booked": False, "hotel": args.hotel, "reason": "no rooms left"}
    _ledger("apply", ctx)
    return {"booked": True, "booking": f"HT-{ctx.idempotency_key[-12:]}", "hotel": args.hotel}


@handler()
def cancel_hotel(ctx: StepContext) -> dict[str, Any]:
    if (ctx.result or {}).get("booked") is False:
        return {"cancelled": None}
    _ledger("undo", ctx, undoes=ctx.idempotency_key.removesuffix(":undo"))
    return {"cancelled": (ctx.result or {}).get("booking")}


class Car(BaseModel):
    city: str = Field(min_length=1)
    days: int = Field(ge=1, le=30)
    fail: bool = Field(False, description="(the stand-in only) fail this call")


@tool(undo="return_car")
def rent_car(args: Car, ctx: StepContext) -> dict[str, Any]:
    """Rent a car in a city."""
    if args.fail:
        raise SoldOut(f"no cars left in {args.city}")
    _ledger("apply", ctx)
    return {"rental": f"CR-{ctx.idempotency_key[-12:]}", "city": args.city}


@handler()
def return_car(ctx: StepContext) -> dict[str, Any]:
    _ledger("undo", ctx, undoes=ctx.idempotency_key.removesuffix(":undo"))
    return {"returned": (ctx.result or {}).get("rental")}


class Payment(BaseModel):
    amount: int = Field(gt=0, description="in cents")
    currency: str = Field(pattern="^[A-Z]{3}$")
    reference: str = Field(min_length=1)


@tool(irreversible=True)
def pay(args: Payment, ctx: StepContext) -> dict[str, Any]:
    """Charge the traveller's card."""
    _ledger("apply", ctx)
    return {"charged": args.amount, "currency": args.currency, "receipt": ctx.idempotency_key}


class Message(BaseModel):
    to: str = Field(min_length=3)
    text: str = Field(min_length=1)


@tool(irreversible=True, approval=False)
def send_email(args: Message, ctx: StepContext) -> dict[str, Any]:
    """Send an email (it cannot be unsent)."""
    _ledger("apply", ctx)
    return {"sent": args.to}


class Note(BaseModel):
    title: str = Field(min_length=1)
    text: str = ""


@tool(undo="delete_note")
def write_note(args: Note, ctx: StepContext) -> dict[str, Any]:
    """Write a note to the traveller's itinerary."""
    _ledger("apply", ctx)
    return {"note": args.title}


@handler()
def delete_note(ctx: StepContext) -> dict[str, Any]:
    _ledger("undo", ctx, undoes=ctx.idempotency_key.removesuffix(":undo"))
    return {"deleted": ctx.params["title"]}
