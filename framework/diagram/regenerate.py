"""Regenerate (or check) the committed pictures under diagrams/.

    python -m statesaga.diagram.regenerate [--check] [--out DIR]

Sources: the shipped lifecycles (statesaga.statecharts) and every examples/*.yaml. Each gets
NAME.md (a Mermaid block), NAME.dot and NAME.svg, plus an index README.md.

Freshness. .md, .dot and README.md must match byte for byte. An SVG's layout depends on the
Graphviz version, so SVGs are not compared byte for byte: each SVG carries the sha256 of the DOT
it was drawn from (see statesaga.adapters.renderers.graphviz), and it is stale when that differs
from the fresh DOT. That check needs no Graphviz. When `dot` is installed, the committed SVG is
also compared with a fresh one in a normalised form (the titles and texts of its nodes and
edges, no coordinates), which catches a hand-edited SVG.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..resources import statecharts_dir
from .extract import from_path
from .render import get_renderer, source_digest

FORMATS = ("md", "dot", "svg")
_MARK = re.compile(r"<!-- statesaga: rendered from DOT sha256=([0-9a-f]{64}) -->")
_SVG_NS = "{http://www.w3.org/2000/svg}"


def sources() -> list[tuple[str, Path, str]]:
    """(name, path, kind) for every picture, lifecycles first, then examples, each sorted."""
    from statesaga import examples, statecharts

    out = [(n, statecharts.path(n), "lifecycle") for n in sorted(statecharts.LIFECYCLES)]
    out += [(p.stem, p, "example") for p in sorted(Path(examples.DIR).glob("*.yaml"))]
    names = [n for n, _, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two sources would write the same diagram files: {', '.join(dupes)}")
    return out


def _index(entries: list[tuple[str, Path, str]]) -> str:
    lines = [
        "# Diagrams",
        "",
        "Generated from the tables that run; do not edit by hand. Regenerate them, or check",
        "them (a test fails when these files are stale), from the repository's root:",
        "",
        "```bash",
        "python -m statesaga.diagram.regenerate            # rewrite diagrams/",
        "python -m statesaga.diagram.regenerate --check    # exit 1 when a file is stale",
        "statesaga diagram examples/trip.yaml --detail     # one picture, with retry policies",
        "```",
        "",
        "| name | kind | source | Mermaid | DOT | SVG |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, path, kind in entries:
        src = f"{'statecharts' if kind == 'lifecycle' else 'examples'}/{path.name}"
        lines.append(
            f"| {name} | {kind} | [{src}](../{src}) | [{name}.md]({name}.md) "
            f"| [{name}.dot]({name}.dot) | [{name}.svg]({name}.svg) |"
        )
    lines.append("")
    for name, _, _ in entries:
        lines += [f"## {name}", "", f"![{name}]({name}.svg)", ""]
    return "\n".join(lines)


def generate(out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write every picture and the index into out_dir; return the files written (sorted)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    renderers = [get_renderer(f) for f in formats]
    entries = sources()
    written = []
    for name, path, _ in entries:
        diagram = from_path(path)
        for r in renderers:
            content = r.render(diagram)
            target = out_dir / f"{name}.{r.extension}"
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8", newline="\n")
            written.append(target)
    index = out_dir / "README.md"
    index.write_text(_index(entries), encoding="utf-8", newline="\n")
    written.append(index)
    return sorted(written)


def normalised_svg(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The parts of an SVG that do not depend on the Graphviz version's layout."""
    root = ET.fromstring(text)
    out = []
    for g in root.iter(f"{_SVG_NS}g"):
        cls = g.get("class", "")
        if cls not in ("node", "edge", "graph"):
            continue
        title = g.findtext(f"{_SVG_NS}title") or ""
        texts = tuple(t.text or "" for t in g.iter(f"{_SVG_NS}text"))
        out.append((cls, title, texts))
    return sorted(out)


@dataclass
class CheckResult:
    stale: list[str] = field(default_factory=list)  # "diagrams/x.dot: differs", …
    skipped: list[str] = field(default_factory=list)  # checks not run, and why

    @property
    def ok(self) -> bool:
        return not self.stale


def check(committed: Path) -> CheckResult:
    """Regenerate into a temporary directory and compare with the committed files."""
    result = CheckResult()
    have_dot = shutil.which("dot") is not None
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh, ("md", "dot", "svg") if have_dot else ("md", "dot"))
        if not have_dot:
            result.skipped.append(
                "SVG layout comparison skipped: graphviz `dot` not found (install graphviz); "
                "SVG freshness was still checked through the DOT digest each SVG carries"
            )
        expected = sorted(p.name for p in fresh.iterdir())
        for name in expected:
            if name.endswith(".svg"):
                continue
            got = committed / name
            if not got.exists():
                result.stale.append(f"{got}: missing")
            elif got.read_bytes() != (fresh / name).read_bytes():
                result.stale.append(f"{got}: differs from the regenerated file")
        for name, _, _ in sources():
            svg = committed / f"{name}.svg"
            if not svg.exists():
                result.stale.append(f"{svg}: missing")
                continue
            text = svg.read_text(encoding="utf-8")
            m = _MARK.search(text)
            digest = source_digest((fresh / f"{name}.dot").read_text(encoding="utf-8"))
            if m is None or m.group(1) != digest:
                result.stale.append(f"{svg}: drawn from another DOT source than {name}.dot")
            elif have_dot and normalised_svg(text) != normalised_svg(
                (fresh / f"{name}.svg").read_text(encoding="utf-8")
            ):
                result.stale.append(f"{svg}: nodes or edges differ from a fresh rendering")
        known = set(expected) | {f"{n}.svg" for n, _, _ in sources()}
        if committed.is_dir():
            for extra in sorted(p.name for p in committed.iterdir() if p.is_file()):
                if extra not in known:
                    result.stale.append(f"{committed / extra}: no source produces it (delete it)")
    return result


def default_dir() -> Path:
    """diagrams/ of the repository the command runs in (its root is the working directory),
    else of the source tree statesaga is installed from (editable), else ./diagrams."""
    here = Path.cwd()
    if (here / "pyproject.toml").exists() and (here / "diagrams").is_dir():
        return here / "diagrams"
    repo: Path = statecharts_dir().parent
    if (repo / "pyproject.toml").exists() and (repo / "diagrams").is_dir():
        return repo / "diagrams"
    return Path("diagrams")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statesaga.diagram.regenerate")
    parser.add_argument("--check", action="store_true", help="fail if committed files are stale")
    parser.add_argument("--out", type=Path, default=None, help="default: the repo's diagrams/")
    args = parser.parse_args(argv)
    out = args.out or default_dir()
    if args.check:
        result = check(out)
        for s in result.skipped:
            print(f"note: {s}", file=sys.stderr)
        for s in result.stale:
            print(f"stale: {s}")
        if not result.ok:
            print("regenerate with: python -m statesaga.diagram.regenerate", file=sys.stderr)
            return 1
        print(f"ok: {out} is up to date")
        return 0
    for p in generate(out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
