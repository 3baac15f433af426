"""The committed pictures under diagrams/ must be what the tables produce today."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from statesaga.diagram.regenerate import check, generate, main, normalised_svg, sources

COMMITTED = Path(__file__).resolve().parents[1] / "diagrams"
HAVE_DOT = shutil.which("dot") is not None


def test_committed_diagrams_are_fresh() -> None:
    result = check(COMMITTED)
    assert result.ok, (
        "stale diagrams (run `python -m statesaga.diagram.regenerate`):\n  "
        + "\n  ".join(result.stale)
    )


@pytest.mark.skipif(
    not HAVE_DOT,
    reason="graphviz `dot` not installed: the SVG layout comparison is skipped (SVG freshness "
    "is still checked through the DOT digest in test_committed_diagrams_are_fresh)",
)
def test_committed_svgs_match_a_fresh_rendering(tmp_path: Path) -> None:
    # Compared in a normalised form (titles and texts of nodes and edges): coordinates and the
    # version comment differ between Graphviz versions for the very same DOT.
    generate(tmp_path, ("svg",))
    for name, _, _ in sources():
        got = normalised_svg((COMMITTED / f"{name}.svg").read_text(encoding="utf-8"))
        want = normalised_svg((tmp_path / f"{name}.svg").read_text(encoding="utf-8"))
        assert got == want, f"diagrams/{name}.svg differs from a fresh rendering"


def test_every_source_has_md_dot_svg() -> None:
    names = {n for n, _, _ in sources()}
    assert {"workflow", "step", "todo", "trip"} <= names
    for n in names:
        for ext in ("md", "dot", "svg"):
            assert (COMMITTED / f"{n}.{ext}").is_file(), f"diagrams/{n}.{ext} missing"
        assert f"[{n}.svg]({n}.svg)" in (COMMITTED / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    out = tmp_path / "diagrams"
    generate(out, ("md", "dot", "svg") if HAVE_DOT else ("md", "dot"))
    if not HAVE_DOT:  # the SVG check needs some SVG carrying the right digest
        for name, _, _ in sources():
            shutil.copy(COMMITTED / f"{name}.svg", out / f"{name}.svg")
    return out


@pytest.mark.slow
def test_check_names_a_stale_text_file(copy: Path) -> None:
    assert check(copy).ok
    (copy / "trip.dot").write_text("digraph { }\n", encoding="utf-8")
    result = check(copy)
    assert [s for s in result.stale] == [f"{copy / 'trip.dot'}: differs from the regenerated file"]


def test_check_names_a_missing_and_an_extra_file(copy: Path) -> None:
    (copy / "step.md").unlink()
    (copy / "old.dot").write_text("x", encoding="utf-8")
    stale = check(copy).stale
    assert f"{copy / 'step.md'}: missing" in stale
    assert f"{copy / 'old.dot'}: no source produces it (delete it)" in stale


def test_check_names_an_svg_drawn_from_another_dot(copy: Path) -> None:
    svg = copy / "todo.svg"
    text = svg.read_text(encoding="utf-8")
    svg.write_text(text.replace("sha256=", "sha256=0", 1)[:-1], encoding="utf-8")
    assert check(copy).stale == [f"{svg}: drawn from another DOT source than todo.dot"]


@pytest.mark.skipif(not HAVE_DOT, reason="graphviz `dot` not installed: no fresh SVG to compare")
def test_check_names_a_hand_edited_svg(copy: Path) -> None:
    svg = copy / "todo.svg"
    svg.write_text(svg.read_text(encoding="utf-8").replace(">blocked<", ">hacked<"), "utf-8")
    assert check(copy).stale == [f"{svg}: nodes or edges differ from a fresh rendering"]


@pytest.mark.slow
def test_generation_is_deterministic(tmp_path: Path) -> None:
    fmts = ("md", "dot", "svg") if HAVE_DOT else ("md", "dot")
    a, b = generate(tmp_path / "a", fmts), generate(tmp_path / "b", fmts)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


@pytest.mark.slow
def test_regenerate_entry_point_check_mode(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--out", str(copy)]) == 0
    (copy / "workflow.md").write_text("# old\n", encoding="utf-8")
    assert main(["--check", "--out", str(copy)]) == 1
    assert f"stale: {copy / 'workflow.md'}" in capsys.readouterr().out


def test_readme_step_lifecycle_block_is_fresh() -> None:
    from statesaga.charts.lifecycles import lifecycle
    from statesaga.diagram import from_chart, get_renderer

    readme = (COMMITTED.parent / "README.md").read_text(encoding="utf-8")
    block = f"```mermaid\n{get_renderer('mermaid').render(from_chart(lifecycle('step')))}```"
    assert block in readme, "README.md's step lifecycle block is stale: paste diagrams/step.md's"
