"""Plugins written outside the tree: a package with its own pyproject and entry points is built
and installed with pip, then a saga runs on its store with a step table that uses its effect
and guard. Each use runs in a subprocess, so entry points are read afresh from what is
installed, as in a user's process.

The plugin is installed with `pip install --target` into a temporary directory put on
PYTHONPATH: the same build and the same metadata a site-packages install produces, without
changing the venv that other tests (and other processes) share.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from statesaga import (
    AdapterError,
    DefinitionError,
    Registry,
    StepStatus,
    WorkflowState,
    examples_dir,
    statecharts_dir,
)
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.plugins import lifecycle_chart

FIXTURE = Path(__file__).parent / "plugin_fixture"

RUN_SAGAS = """
import json, sys
from statesaga import examples_dir
from statesaga.definitions.load import load_definition
from statesaga.engine import Engine
from statesaga.plugins import open_queue, open_store

store_url, chart_path, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = open_store(store_url)
store.initialize()
engine = Engine(store, open_queue("inline://"), step_chart=chart_path, heartbeat_interval=0)
trip = load_definition(examples_dir() / "trip.yaml")
for data in inputs:
    wf = engine.run(trip, data, timeout=60)
    print(json.dumps({"id": wf.id, "status": wf.status.value}))
"""

BROKEN_ENTRY_POINTS = """\
[statesaga.effects]
explode = statesaga_broken_missing:explode

[statesaga.stores]
broken = statesaga_broken_missing:BrokenStore
"""


@dataclass(frozen=True)
class Plugin:
    source: Path  # the plugin's source tree (a copy of tests/plugin_fixture)
    site: Path  # where pip installed it
    broken: Path  # a distribution whose entry points name a module that does not exist

    def env(self, *, broken: bool = False) -> dict[str, str]:
        paths = [str(self.site), *([str(self.broken)] if broken else [])]
        old = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, *([old] if old else [])])}


def _pip_install(source: Path, target: Path) -> None:
    # Offline when the build tools are at hand (the test extra installs them); otherwise pip
    # fetches them into an isolated build environment.
    offline = all(importlib.util.find_spec(m) for m in ("setuptools", "wheel"))
    flags = ["--no-build-isolation", "--no-index"] if offline else []
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["--no-deps", *flags, "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )


def _write_broken_dist(root: Path) -> None:
    """A distribution's installed metadata, as pip would leave it, for a plugin whose code is
    missing: its entry points are listed but cannot be imported."""
    info = root / "statesaga_broken-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: statesaga-broken\nVersion: 0.0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(BROKEN_ENTRY_POINTS, encoding="utf-8")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    root = tmp_path_factory.mktemp("plugin")
    source = root / "statesaga-jsonfile"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = root / "site"
    try:
        _pip_install(source, site)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the plugin failed:\n{exc.stdout}\n{exc.stderr}")
    broken = root / "broken"
    _write_broken_dist(broken)
    yield Plugin(source, site, broken)
    shutil.rmtree(root, ignore_errors=True)


def _python(code: str, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=dict(env)
    )


def _cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statesaga.cli", *args],
        capture_output=True,
        text=True,
        env=dict(env),
    )


def notifying_step_table(notify_file: Path) -> dict[str, Any]:
    """The user's copy of the shipped step lifecycle: a step the workflow input names under
    `notify` (the plugin's guard) also gets the plugin's `notify` effect when it succeeds."""
    data: dict[str, Any] = yaml.safe_load((statecharts_dir() / "step.yaml").read_text())
    transitions: list[dict[str, Any]] = []
    for t in data["transitions"]:
        if t["trigger"] == "succeed":
            transitions.append(
                {
                    **t,
                    "guards": ["notify_wanted"],
                    "effects": [*t["effects"], {"notify": {"file": str(notify_file)}}],
                    "description": "the action succeeded; tell whoever asked",
                }
            )
        transitions.append(t)
    data["transitions"] = transitions
    return data


# -- the out-of-tree plugin ------------------------------------------------------------------


@pytest.mark.slow
def test_a_saga_runs_on_the_plugin_store_with_the_plugin_effect_and_guard(
    plugin: Plugin, tmp_path: Path
) -> None:
    docs, notes = tmp_path / "docs", tmp_path / "notify.jsonl"
    chart = tmp_path / "step.yaml"
    chart.write_text(yaml.safe_dump(notifying_step_table(notes), sort_keys=False))
    inputs = [
        {"origin": "CDG", "destination": "LIS", "nights": 2, "amount": 420, "email": "a@b.c"},
        {"origin": "CDG", "destination": "OSL", "nights": 1, "amount": 90, "email": "a@b.c"},
    ]
    inputs[0]["notify"] = ["reserve_hotel", "charge_payment"]
    # The second trip is refused at the car: the flight was booked (and is notified), the car
    # never succeeds (so never notified) and the saga unwinds.
    inputs[1].update(notify=["reserve_flight", "reserve_car"], fail_at="reserve_car")

    out = _python(RUN_SAGAS, f"jsonfile://{docs}", str(chart), json.dumps(inputs), env=plugin.env())
    assert out.returncode == 0, out.stderr
    runs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["status"] for r in runs] == ["COMPLETED", "COMPENSATED"]
    ok_id, undone_id = runs[0]["id"], runs[1]["id"]

    # The plugin's store wrote one JSON document per workflow, readable by statesaga.
    assert sorted(p.name for p in docs.glob("*.json")) == sorted(
        [f"{ok_id}.json", f"{undone_id}.json"]
    )
    ok = WorkflowState.from_json((docs / f"{ok_id}.json").read_text())
    undone = WorkflowState.from_json((docs / f"{undone_id}.json").read_text())
    assert all(s.status is StepStatus.COMPLETED for s in ok.steps)
    assert ok.revision > len(ok.steps)  # every transition was a revision-checked save
    assert undone.step("reserve_flight").status is StepStatus.COMPENSATED
    assert undone.step("reserve_car").status is StepStatus.FAILED

    # The effect ran only for the steps the guard let through, once each, after the save:
    # when it ran, the store already held the step as COMPLETED.
    lines = [json.loads(line) for line in notes.read_text().splitlines()]
    assert [(n["workflow_id"], n["step"]) for n in lines] == [
        (ok_id, "reserve_hotel"),
        (ok_id, "charge_payment"),
        (undone_id, "reserve_flight"),
    ]
    for n in lines:
        assert (n["trigger"], n["dest"], n["stored_step_status"]) == (
            "succeed",
            "COMPLETED",
            "COMPLETED",
        )


@pytest.mark.slow
def test_the_store_conformance_suite_passes_against_the_plugin_store(plugin: Plugin) -> None:
    suite = plugin.source / "tests" / "check_store_conformance.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        capture_output=True,
        text=True,
        cwd=plugin.source,
        env=plugin.env(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary


def test_the_plugin_store_stands_on_the_public_base_and_imports_nothing_private() -> None:
    """A plugin store subclasses statesaga's public store base (the shared document
    algorithm) and, like any plugin, imports no private statesaga module."""
    import ast

    from statesaga.adapters.stores.document import DocumentStore

    source = FIXTURE / "src" / "statesaga_jsonfile" / "__init__.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("statesaga")
    }
    assert "statesaga.adapters.stores.document" in imported
    private = [m for m in imported if any(part.startswith("_") for part in m.split("."))]
    assert not private, private
    store = next(
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "JsonFileStore"
    )
    assert [ast.unparse(b) for b in store.bases] == [DocumentStore.__name__]


@pytest.mark.slow
def test_plugins_command_lists_builtins_and_the_plugin_and_reports_a_broken_one(
    plugin: Plugin,
) -> None:
    out = _cli("plugins", env=plugin.env(broken=True))
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in out.stdout.splitlines()[1:]}
    for group, name in [
        ("statesaga.stores", "memory"),
        ("statesaga.stores", "sqlite"),
        ("statesaga.queues", "inline"),
        ("statesaga.renderers", "mermaid"),
    ]:
        assert rows[(group, name)][-1] == "ok", rows[(group, name)]
    assert rows[("statesaga.stores", "jsonfile")][2:] == [
        "statesaga_jsonfile:JsonFileStore",
        "0.1.0",
        "ok",
    ]
    assert rows[("statesaga.effects", "notify")][-1] == "ok"
    assert rows[("statesaga.guards", "notify_wanted")][-1] == "ok"
    broken = rows[("statesaga.effects", "explode")]
    assert broken[2:4] == ["statesaga_broken_missing:explode", "0.0.1"]
    assert "ModuleNotFoundError" in " ".join(broken[4:])
    assert "2 plugins failed to load" in out.stderr

    as_json = _cli("plugins", "--json", "--group", "statesaga.stores", env=plugin.env(broken=True))
    stores = {p["name"]: p for p in map(json.loads, as_json.stdout.splitlines())}
    assert {"memory", "sqlite", "jsonfile", "broken"} <= set(stores)
    assert (
        stores["jsonfile"]["dist"] == "statesaga-jsonfile" and stores["jsonfile"]["error"] is None
    )
    assert "statesaga_broken_missing" in stores["broken"]["error"]

    assert _cli("plugins", "--strict", env=plugin.env(broken=True)).returncode == 1
    assert _cli("plugins", "--strict", env=plugin.env()).returncode == 0


def test_a_broken_effect_plugin_stops_an_engine_with_a_clear_error(plugin: Plugin) -> None:
    code = (
        "from statesaga import AdapterError\n"
        "from statesaga.engine import Engine\n"
        "from statesaga.plugins import open_queue, open_store\n"
        "try:\n"
        "    Engine(open_store('memory://'), open_queue('inline://'))\n"
        "except AdapterError as exc:\n"
        "    print(exc)\n"
    )
    out = _python(code, env=plugin.env(broken=True))
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert message.startswith("statesaga.effects plugin 'explode'"), message
    assert "statesaga-broken 0.0.1" in message and "ModuleNotFoundError" in message


def test_plugins_are_loaded_only_when_an_engine_is_built(plugin: Plugin, tmp_path: Path) -> None:
    chart = tmp_path / "step.yaml"
    chart.write_text(yaml.safe_dump(notifying_step_table(tmp_path / "n.jsonl"), sort_keys=False))
    # Even with a broken plugin installed, importing statesaga and validating a table that
    # names a plugin's effect load no plugin code.
    code = (
        "import sys\n"
        "from statesaga.cli import main\n"
        "try:\n"
        "    main(['validate', sys.argv[1]])\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted(m for m in sys.modules if m.startswith('statesaga_')))\n"
    )
    out = _python(code, str(chart), env=plugin.env(broken=True))
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


# -- user lifecycles (in process) --------------------------------------------------------------


def _step_table() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((statecharts_dir() / "step.yaml").read_text())
    return data


def test_a_user_lifecycle_must_keep_every_trigger_the_engine_fires() -> None:
    table = _step_table()
    for t in table["transitions"]:
        if t["trigger"] == "succeed":
            t["trigger"] = "done"  # a renamed trigger the engine would never fire
    with pytest.raises(DefinitionError) as caught:
        lifecycle_chart("step", table)
    assert "state 'EXECUTING' no longer accepts ['succeed']" in str(caught.value)


def test_a_user_lifecycle_cannot_add_or_rename_states() -> None:
    table = _step_table()
    table["chart"] = "my_step"
    table["states"].append({"name": "PAUSED"})
    table["transitions"].append({"trigger": "pause", "source": "QUEUED", "dest": "PAUSED"})
    table["transitions"].append({"trigger": "unpause", "source": "PAUSED", "dest": "QUEUED"})
    with pytest.raises(DefinitionError) as caught:
        lifecycle_chart("step", table)
    text = str(caught.value)
    assert "must be named 'step'" in text
    assert "states unknown to the engine cannot be added: ['PAUSED']" in text


def test_an_engine_runs_a_user_lifecycle_with_an_application_effect(tmp_path: Path) -> None:
    # The same mechanism without a plugin: the application registers the effect itself.
    seen: list[tuple[str, str]] = []
    store = MemoryStore()
    registry = Registry()

    @registry.effect("notify")
    def record(ctx: Any, file: str) -> Any:
        name = ctx.step.name
        return lambda: seen.append((name, store.get(ctx.workflow.id).step(name).status.value))

    @registry.guard("notify_wanted")
    def always(ctx: Any) -> bool:
        return True

    registry.register_module("statesaga.examples.trip_handlers")
    engine = Engine(
        store,
        InlineQueue(),
        registry,
        step_chart=notifying_step_table(tmp_path / "unused"),
        heartbeat_interval=0,
    )
    trip = load_definition(examples_dir() / "trip.yaml")
    wf = engine.run(
        trip, {"origin": "A", "destination": "B", "nights": 1, "amount": 1, "email": "a@b.c"}
    )
    assert wf.status.value == "COMPLETED"
    assert seen == [(s.name, "COMPLETED") for s in wf.steps]


def test_built_in_adapters_are_found_while_the_metadata_is_being_rewritten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup that finds no entry point at all in a group statesaga registers built-ins in
    read the installed metadata mid-change (a CI run once failed with "no statesaga.stores
    plugin named 'sqlite' (installed: none)"): it looks again for a moment. A name that is
    simply not installed is refused at once."""
    import time
    import tomllib

    from statesaga import plugins

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert plugins._BUILT_IN_GROUPS == {
        g for g in declared["project"]["entry-points"] if g.startswith("statesaga.")
    }
    real = plugins.entry_points
    reads: list[str] = []

    def mid_change(**params: str) -> Any:
        reads.append(params["group"])
        return [] if len(reads) <= 3 else real(**params)

    monkeypatch.setattr(plugins, "entry_points", mid_change)
    assert plugins.load("statesaga.stores", "sqlite").__name__ == "SQLiteStore"
    assert reads == ["statesaga.stores"] * 4
    started = time.monotonic()
    with pytest.raises(AdapterError, match="no statesaga.stores plugin named 'nope' .*memory"):
        plugins.load("statesaga.stores", "nope")
    assert time.monotonic() - started < 0.5
