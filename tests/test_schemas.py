"""The JSON Schemas editors validate with (issue 17): shipped, current, described field by
field, named by a `yaml-language-server` modeline in every shipped YAML file, and accepting
every one of those files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from statesaga.charts.chart import chart_json_schema
from statesaga.definitions.load import is_definition
from statesaga.definitions.spec import definition_json_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = {
    "chart.schema.json": chart_json_schema,
    "definition.schema.json": definition_json_schema,
}
YAMLS = sorted([*(ROOT / "statecharts").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")])
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S+)$")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_shipped_schema_is_current(name: str) -> None:
    shipped = json.loads((ROOT / "statecharts" / name).read_text(encoding="utf-8"))
    flag = " --definition" if name.startswith("definition") else ""
    assert shipped == SCHEMAS[name](), f"regenerate: statesaga schema{flag} > statecharts/{name}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_field_is_described(name: str) -> None:
    schema = SCHEMAS[name]()
    bare = [
        f"{where}.{prop}"
        for where, part in [("(top)", schema), *schema.get("$defs", {}).items()]
        for prop, spec in part.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert not bare, f"fields without a description in {name}: {bare}"


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_every_shipped_table_names_its_schema_and_is_accepted(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = MODELINE.match(first)
    assert m, f"{path.name}: first line must be a yaml-language-server modeline"
    schema_file = (path.parent / m.group("path")).resolve()
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    want = "definition.schema.json" if is_definition(data) else "chart.schema.json"
    assert schema_file == ROOT / "statecharts" / want
    jsonschema.validate(data, json.loads(schema_file.read_text(encoding="utf-8")))


def test_the_schema_rejects_what_the_loader_rejects() -> None:
    schema = definition_json_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"workflow": "x", "steps": [{"name": "a", "acton": "y"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"workflow": "x", "steps": []}, schema)
