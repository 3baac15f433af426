"""`statesaga diagram`: files and stored workflows, to stdout or to a directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import diagram_helpers as H  # registered by conftest.py (importlib mode)
import pytest
from click.testing import CliRunner
from statesaga.adapters.stores.memory import MemoryStore
from statesaga.cli import main
from statesaga.examples import path as example_path
from statesaga.statecharts import path as chart_path


def test_chart_to_stdout_as_mermaid() -> None:
    r = CliRunner().invoke(main, ["diagram", str(chart_path("todo"))])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[3] == "stateDiagram-v2"
    assert "    [*] --> pending\n" in r.output


def test_detail_and_dot_format() -> None:
    args = ["diagram", str(chart_path("step")), "--format", "dot", "--detail"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("digraph G {")
    assert "persist" in r.output and "shape=note" in r.output


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")
def test_all_formats_to_a_directory(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "diagram",
            str(example_path("trip")),
            str(chart_path("workflow")),
            "--format",
            "all",
            "-o",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{n}.{e}" for n in ("trip", "workflow") for e in ("dot", "md", "mmd", "svg")
    ]
    assert (tmp_path / "trip.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_instance_from_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    wf = H.live_trip()
    store.create(wf)
    urls = []

    def fake_open(url: str) -> MemoryStore:
        urls.append(url)
        return store

    monkeypatch.setattr("statesaga.plugins.open_store", fake_open)
    monkeypatch.setenv("STATESAGA_STORE", "memory://from-env")
    r = CliRunner().invoke(main, ["diagram", "--instance", wf.id])
    assert r.exit_code == 0, r.output
    assert urls == ["memory://from-env"]
    assert "reserve_car : FAILED" in r.output
    r = CliRunner().invoke(
        main,
        [
            "diagram",
            "--instance",
            wf.id,
            "--store",
            "memory://x",
            "--view",
            "workflow",
            "--format",
            "dot",
        ],
    )
    assert r.exit_code == 0, r.output
    assert urls[-1] == "memory://x"
    assert '"COMPENSATING" -> "COMPENSATED" [label="4. compensated [all_compensated]"' in r.output


def test_unknown_instance_is_one_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("statesaga.plugins.open_store", lambda url: MemoryStore())
    r = CliRunner().invoke(main, ["diagram", "--instance", "WF-nope", "--store", "memory://"])
    assert r.exit_code == 1
    assert "workflow WF-nope not found" in r.output


def test_usage_errors(tmp_path: Path) -> None:
    todo = str(chart_path("todo"))
    assert CliRunner().invoke(main, ["diagram"]).exit_code == 2
    assert CliRunner().invoke(main, ["diagram", todo, "--instance", "WF-1"]).exit_code == 2
    r = CliRunner().invoke(main, ["diagram", todo, "--format", "png"])
    assert r.exit_code == 2 and "is not one of 'dot', 'md', 'mermaid', 'svg', 'all'" in r.output
    assert CliRunner().invoke(main, ["diagram", todo, "--format", "all"]).exit_code == 2


def test_invalid_table_exits_1_with_located_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("chart: x\ninitial: nowhere\nstates:\n  - name: a\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["diagram", str(bad)])
    assert r.exit_code == 1
    assert "initial state 'nowhere' is not defined" in r.output
