"""Tools: handlers with an argument model and a declared reversibility, loaded only from the
operator's allow-list, and listed for an agent's model as JSON-Schema tool definitions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field
from statesaga.context import StepContext
from statesaga.errors import RegistryError
from statesaga.examples import agent_tools
from statesaga.plans import Reversibility, ToolArgumentsError, args_hash, tool, tool_of, tools_in
from statesaga.registry import Registry


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )


def ctx(params: dict[str, Any]) -> StepContext:
    return StepContext("WF-1", "s", 1, params, {}, {}, "WF-1:s")


class Args(BaseModel):
    n: int = Field(ge=1)


def test_a_tool_must_say_how_it_is_undone() -> None:
    with pytest.raises(RegistryError, match="exactly one of read_only"):
        tool()
    with pytest.raises(RegistryError, match="exactly one of read_only"):
        tool(read_only=True, irreversible=True)


def test_the_argument_model_comes_from_the_first_parameter() -> None:
    @tool(irreversible=True)
    def launch(args: Args, ctx: StepContext) -> int:
        """Launch n rockets.

        More text that is not the description."""
        return args.n * 2

    spec = tool_of(launch)
    assert spec is not None
    assert spec.args is Args and spec.reversibility is Reversibility.IRREVERSIBLE
    assert spec.approval is True  # irreversible: a person approves it by default
    assert spec.description == "Launch n rockets."
    assert launch(ctx({"n": 3})) == 6
    with pytest.raises(ToolArgumentsError, match="n: Input should be greater"):
        launch(ctx({"n": 0}))

    with pytest.raises(RegistryError, match="annotated with a pydantic model"):

        @tool(read_only=True)
        def bare(x: int) -> None: ...


def test_a_reversible_tools_undo_must_be_registered() -> None:
    @tool(undo="unlaunch")
    def launch(args: Args) -> None: ...

    registry = Registry().register(launch)
    with pytest.raises(RegistryError, match="undone by 'unlaunch', which is not a registered"):
        tools_in(registry)
    registry.register_handler("unlaunch", lambda c: None)
    assert set(tools_in(registry)) == {"launch"}


def test_the_hash_binds_the_tool_and_the_canonical_args() -> None:
    a = args_hash("pay", {"amount": 1, "currency": "EUR"})
    assert a == args_hash("pay", {"currency": "EUR", "amount": 1})  # key order is not content
    assert a != args_hash("pay", {"amount": 2, "currency": "EUR"})
    assert a != args_hash("refund", {"amount": 1, "currency": "EUR"})


def test_statesaga_tools_json_lists_what_a_model_is_given(tmp_path: Path) -> None:
    out = cli("tools", "--tools", "statesaga.examples.agent_tools", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    names = [t["function"]["name"] for t in listed]
    # Undo handlers are not tools a model may call.
    assert names == [
        "book_flight", "book_hotel", "pay", "rent_car", "search_flights", "send_email",
        "write_note",
    ]  # fmt: skip
    by_name = {t["function"]["name"]: t for t in listed}
    assert all(t["type"] == "function" for t in listed)
    pay = by_name["pay"]["function"]
    assert "approves its exact arguments" in pay["description"]
    assert "undone by cancel_hotel" in by_name["book_hotel"]["function"]["description"]
    # The parameters are a JSON Schema that accepts what the tool accepts and refuses the rest.
    schema = pay["parameters"]
    jsonschema.validate({"amount": 100, "currency": "EUR", "reference": "x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"amount": -1, "currency": "EUR", "reference": "x"}, schema)

    anthropic = cli(
        "tools", "--tools", "statesaga.examples.agent_tools", "--json", "--format", "anthropic",
        cwd=tmp_path,
    )  # fmt: skip
    first = json.loads(anthropic.stdout)[0]
    assert set(first) == {"name", "description", "input_schema"}


def test_tools_come_only_from_the_allow_list(tmp_path: Path) -> None:
    (tmp_path / "planted_tools.py").write_text(
        "raise SystemExit('planted module imported')\n", encoding="utf-8"
    )
    none = cli("tools", cwd=tmp_path, env={"STATESAGA_HANDLERS": ""})
    assert none.returncode == 1 and "no tools" in none.stderr
    # A plan naming a tool from a module nobody allowed is refused; nothing is imported.
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "plan: p\nitems:\n  - id: a\n    tool: planted\n    args: {}\n", encoding="utf-8"
    )
    out = cli("plan", "check", str(plan), cwd=tmp_path, env={"STATESAGA_HANDLERS": ""})
    assert out.returncode == 1
    assert "plan.yaml:4: [items.0.tool] item 'a': unknown tool 'planted'" in out.stderr
    assert "planted module imported" not in out.stderr + out.stdout


def test_the_example_tools_register_as_handlers() -> None:
    registry = Registry().register(agent_tools)
    found = tools_in(registry)
    assert found["book_hotel"].undo == "cancel_hotel"
    assert registry.has_handler("cancel_hotel")
    assert found["send_email"].approval is False  # irreversible, approval waived by the tool
