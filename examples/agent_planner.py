"""A scripted travel agent (no model needed) whose plan runs as a durable saga.

The "model" below answers with OpenAI-style tool calls, turned into plan items by
`items_from_tool_calls`; the agent then works the way an agent does:

1. it plans: search, book a flight, a hotel and a car, draft a note, pay (a person must
   approve the exact amount), then email the traveller and write the itinerary;
2. it meets a failure: the hotel it chose is full (the tool's result says so);
3. it revises the rest of its plan while it runs: another hotel, and the payment's new total
   (items that have already run cannot change; the approval request now shows the new args);
4. it asks for the approval, which a person gives for the hash of those exact args;
5. the plan finishes; every version of it is kept.

Run it: `python -m statesaga.examples.agent_planner [--db PATH]` (SQLite, in-process queue).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statesaga.engine import Engine
from statesaga.examples import agent_tools
from statesaga.models import WorkflowState
from statesaga.plans import (
    approve,
    items,
    items_from_tool_calls,
    open_requests,
    revise_plan,
    start_plan,
)
from statesaga.plugins import open_queue, open_store


def call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    """A tool call as OpenAI's Chat Completions API returns it."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def first_plan() -> dict[str, Any]:
    """The model's first answer: one turn of tool calls per stage of the trip."""
    search = items_from_tool_calls(
        [call("search", "search_flights", origin="BER", destination="LIS", date="2026-05-01")]
    )
    bookings = items_from_tool_calls(
        [
            call("flight", "book_flight", flight="SS205", passenger="Alice"),
            call("hotel", "book_hotel", hotel="Grand", nights=3),
            call("car", "rent_car", city="Lisbon", days=3),
            call("note", "write_note", title="Lisbon draft", text="SS205, Grand, car"),
        ],
        depends_on=["search"],
    )
    payment = items_from_tool_calls(
        [call("payment", "pay", amount=98000, currency="EUR", reference="trip-alice")],
        depends_on=["flight", "hotel", "car", "note"],
    )
    after = items_from_tool_calls(
        [
            call("confirm", "send_email", to="alice@example.com", text="Your trip is booked."),
        ],
        depends_on=["payment"],
    ) + items_from_tool_calls(
        [call("itinerary", "write_note", title="Lisbon", text="SS205, Grand, car")],
        depends_on=["confirm"],
    )
    return {"plan": "trip_for_alice", "items": [*search, *bookings, *payment, *after]}


def run_agent(engine: Engine, say: Callable[[str], None] = print) -> WorkflowState:
    wf, compiled = start_plan(engine, first_plan(), session_id="alice", by="agent")
    for warning in compiled.warnings:
        say(f"  warning: {warning.message}")
    say(f"plan v1 started: {wf.id}")
    wf = engine.wait(wf.id)  # in-process: runs until the plan waits for a person
    hotel = next(i for i in items(wf) if i.id == "hotel")
    say(f"  hotel: {hotel.result}")
    if hotel.result.get("booked") is False:
        say("  the Grand is full: revising the rest of the plan")
        wf = revise_plan(
            engine,
            wf.id,
            {
                "base_version": 1,
                "add": items_from_tool_calls(
                    [call("hotel2", "book_hotel", hotel="Plaza", nights=3)],
                    depends_on=["search"],
                ),
                "replace": [
                    *items_from_tool_calls(
                        [
                            call(
                                "payment",
                                "pay",
                                amount=91000,
                                currency="EUR",
                                reference="trip-alice",
                            )
                        ],
                        depends_on=["flight", "hotel2", "car", "note"],
                    ),  # fmt: skip
                    *items_from_tool_calls(
                        [call("itinerary", "write_note", title="Lisbon", text="SS205, Plaza")],
                        depends_on=["confirm"],
                    ),
                ],
            },
            by="agent",
        )
        wf = engine.wait(wf.id)
    [request] = open_requests(wf)
    say(f"  approval needed: {request.tool} {json.dumps(request.args, sort_keys=True)}")
    say(f"    statesaga approve {wf.id} {request.item} --hash {request.hash} --by NAME")
    # The person reads the request and approves exactly that call.
    approve(engine, wf.id, request.item, request.hash, by="alice")
    wf = engine.wait(wf.id)
    assert wf.plan is not None
    say(f"{wf.id}: {wf.status.value} after {len(wf.plan.versions)} plan versions")
    for view in items(wf):
        say(f"  {view.id:<10} {view.status:<10} todo {view.todo}")
    return wf


def main(db: str | Path, say: Callable[[str], None] = print) -> WorkflowState:
    engine = Engine(open_store(f"sqlite:///{db}"), open_queue("inline://"), handlers=[agent_tools])
    engine.store.initialize()
    return run_agent(engine, say)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    options = parser.parse_args()
    if options.db:
        main(options.db)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp) / "agent.db")
