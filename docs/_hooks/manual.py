"""MkDocs hooks of the manual (mkdocs.yml `hooks:`): what the site shows that no one writes by
hand.

- The repository's own files the pages link to and show: diagrams/ (drawn from the tables by
  `python -m statesaga.diagram.regenerate`, which a test keeps fresh), examples/ and
  statecharts/ (the tables, the handlers, the JSON Schemas), copied into the site at the same
  paths, so a page links `../examples/trip.yaml` and the site serves that very file.
- reference/schemas.md: the JSON Schemas statesaga ships, field by field, from the schemas
  themselves (`statesaga schema`).
- reference/http-api.md: the HTTP API from the OpenAPI document the server itself serves at
  /api/openapi.json.

Nothing here reaches the network.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
#: Repository folders served as they are, and the kinds of file taken from each.
MIRRORED = {
    "diagrams": (".md", ".svg", ".dot", ".png"),
    "examples": (".yaml", ".yml", ".json", ".py", ".service", ".env"),
    "statecharts": (".yaml", ".json"),
}


def on_startup(command: str, dirty: bool) -> None:
    # `.venv/bin/mkdocs` puts .venv/bin first on sys.path, where the `statesaga` console script
    # lives: griffe (mkdocstrings) would take that file for the package. The package is found
    # through the installed distribution instead.
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "statesaga").is_file()]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for folder, suffixes in MIRRORED.items():
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
                uri = path.relative_to(ROOT).as_posix()
                files.append(
                    File(uri, src_dir=str(ROOT), dest_dir=config.site_dir,
                         use_directory_urls=config.use_directory_urls)
                )  # fmt: skip
    files.append(File.generated(config, "reference/schemas.md", content=schemas_page()))
    files.append(File.generated(config, "reference/http-api.md", content=http_api_page()))
    return files


# -- JSON Schemas --------------------------------------------------------------------------------


def schemas_page() -> str:
    from statesaga.charts.spec import chart_json_schema
    from statesaga.definitions.spec import definition_json_schema

    out = [
        "# JSON Schemas",
        "",
        "The formats of the YAML tables, as the JSON Schemas statesaga ships (generated from the",
        "models that load the tables; a test keeps the shipped files current). Editors use them",
        "to validate and complete the tables ([the command line and your editor]"
        "(../operating/cli.md#the-command-line-and-your-editor)); `statesaga schema` prints the",
        "chart schema, `statesaga schema --definition` the definition's, and",
        "`statesaga schema --input DEFINITION.yaml` the input schema a definition declares.",
        "",
        "Files: [statecharts/definition.schema.json](../statecharts/definition.schema.json),",
        "[statecharts/chart.schema.json](../statecharts/chart.schema.json).",
        "",
    ]
    for title, schema in (
        ("Saga definitions (`statesaga schema --definition`)", definition_json_schema()),
        ("Lifecycle tables, charts (`statesaga schema`)", chart_json_schema()),
    ):
        out += [f"## {title}", "", schema.get("description", ""), ""]
        out += _schema_tables(schema)
    return "\n".join(out) + "\n"


def _schema_tables(schema: dict[str, Any]) -> list[str]:
    defs: dict[str, Any] = schema.get("$defs", {})
    out = _object_table("(top level)", schema, defs)
    for name in sorted(defs):
        if defs[name].get("properties"):
            out += _object_table(name, defs[name], defs)
    return out


def _object_table(name: str, obj: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    required = set(obj.get("required", ()))
    out = [f"### {name}", "", _cell(obj.get("description", "")), ""]
    out += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    for field, prop in obj.get("properties", {}).items():
        out.append(
            f"| `{field}` | {_type(prop, defs)} | {'yes' if field in required else ''} "
            f"| {_cell(prop.get('description', ''))} |"
        )
    return [*out, ""]


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        if not defs.get(name, {}).get("properties"):  # an enum or an alias: said in place
            return _type(defs.get(name, {}), defs)
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(_type(p, defs) for p in prop[key])
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"list of {_type(prop['items'], defs)}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_type(prop['additionalProperties'], defs)}"
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# -- HTTP API ------------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """What GET /api/openapi.json answers, asked of the real application (memory store) in
    this process, through ASGI: no socket, no HTTP client."""
    from statesaga.web import ServeSettings, create_app

    app = create_app(ServeSettings(store="memory://", queue="inline://"))
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/api/openapi.json", "raw_path": b"/api/openapi.json",
        "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status != 200:
        raise RuntimeError(f"/api/openapi.json answered {status}: {body[:200]!r}")
    document: dict[str, Any] = json.loads(body)
    return document


def http_api_page() -> str:
    doc = openapi_document()
    out = [
        "# HTTP API",
        "",
        "`statesaga serve` answers these requests (the [dashboard](../operating/dashboard.md)",
        "says how to start it, log in and use a token). This page is drawn from the OpenAPI",
        "document the server itself serves at `/api/openapi.json`; the document follows it in",
        "full. Changes take `Authorization: Bearer TOKEN`.",
        "",
    ]
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            out += [f"## `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [op["summary"], ""]
            if op.get("description"):
                out += [op["description"], ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | description |", "| --- | --- | --- | --- |"]
                out += [
                    f"| `{q.get('name')}` | {q.get('in', '')} | {_type(q.get('schema', {}), {})} "
                    f"| {_cell(q.get('description', ''))} |"
                    for q in params
                ]
                out.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            fields = body.get("schema", {}).get("properties", {})
            if fields:
                needed = set(body["schema"].get("required", ()))
                out += ["| body field | type | required | description |"]
                out += ["| --- | --- | --- | --- |"]
                out += [
                    f"| `{name}` | {_type(f, {})} | {'yes' if name in needed else ''} "
                    f"| {_cell(f.get('description', ''))} |"
                    for name, f in fields.items()
                ]
                out.append("")
            responses = op.get("responses", {})
            if responses:
                out += ["| answer | meaning |", "| --- | --- |"]
                out += [
                    f"| {code} | {_cell(r.get('description', ''))} |"
                    for code, r in responses.items()
                ]
                out.append("")
    out += [
        "## The OpenAPI document",
        "",
        '??? note "/api/openapi.json"',
        "",
        "    ```json",
        *("    " + line for line in json.dumps(doc, indent=2).splitlines()),
        "    ```",
        "",
    ]
    return "\n".join(out)
