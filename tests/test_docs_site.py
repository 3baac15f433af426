"""The manual (docs/, mkdocs.yml) builds strictly and offline, and what it generates is
complete (issue 32).

The build runs `mkdocs build --strict` as CI does, with every proxy variable pointing at a
closed port, so a plugin that tried to download something would fail the build; the pages it
writes must load nothing (script, stylesheet, font, image, frame) from another host. The
generated reference pages must name every command of the CLI and every path of the HTTP API,
and the pictures the pages show are the ones `python -m statesaga.diagram.regenerate` drew.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = NOWHERE
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["NO_MKDOCS_2_WARNING"] = "1"
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    yield out


class _Loads(HTMLParser):
    """What a page makes the browser fetch by itself (links a reader clicks are not loads)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "video", "audio", "embed") and a.get("src"):
            self.urls.append(a["src"] or "")
        if tag == "link" and a.get("href") and (a.get("rel") or "") not in ("next", "prev"):
            if "canonical" not in (a.get("rel") or ""):
                self.urls.append(a["href"] or "")
        if tag == "object" and a.get("data"):
            self.urls.append(a["data"] or "")


@pytest.mark.slow
def test_no_page_loads_anything_from_another_host(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        loads = _Loads()
        loads.feed(text)
        here = page.relative_to(site)
        found += [f"{here}: {u}" for u in loads.urls if re.match(r"(https?:)?//", u)]
        # @import or url() of a web font, and Mermaid's renderer (fetched from a CDN)
        if "fonts.googleapis" in text or 'class="mermaid"' in text:
            found.append(f"{page.relative_to(site)}: a web font or a Mermaid CDN diagram")
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_the_cli_reference_names_every_command(site: Path) -> None:
    from statesaga.cli import main

    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in main.commands if f"statesaga {name}" not in page]
    assert not missing, missing
    for name, command in main.commands.items():  # and every option of each
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in page, f"statesaga {name} {opt}"


@pytest.mark.slow
def test_the_http_api_reference_has_every_path_of_the_openapi_document(site: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("manual", ROOT / "docs/_hooks/manual.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (site / "reference" / "http-api" / "index.html").read_text(encoding="utf-8")
    for path, operations in hooks.openapi_document()["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in page, f"{method.upper()} {path}"


@pytest.mark.slow
def test_the_schemas_reference_has_every_definition_field(site: Path) -> None:
    from statesaga.definitions.spec import definition_json_schema

    page = (site / "reference" / "schemas" / "index.html").read_text(encoding="utf-8")
    for field in definition_json_schema()["properties"]:
        assert f"<code>{field}</code>" in page, field


@pytest.mark.slow
def test_the_python_reference_documents_the_engine(site: Path) -> None:
    page = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    for name in ("Engine", "start", "load_definition", "StepContext", "StoreConformance"):
        assert 'id="statesaga.' in page and name in page, name


@pytest.mark.slow
def test_the_pictures_are_the_generated_diagrams(site: Path) -> None:
    # The home page and the README show diagrams/trip.svg, which regenerate draws from
    # examples/trip.yaml (tests/test_diagram_files.py keeps it fresh); the site serves that file.
    assert "diagrams/trip.svg" in (site / "index.html").read_text(encoding="utf-8")
    assert "](diagrams/trip.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")
    for svg in sorted((ROOT / "diagrams").glob("*.svg")):
        assert (site / "diagrams" / svg.name).read_bytes() == svg.read_bytes(), svg.name


def test_the_readme_is_short_and_links_into_the_site() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") <= 220
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 8, links
    for link in links:
        assert (ROOT / link).is_file(), link


def test_the_manual_lists_every_command() -> None:
    # The command line page's list (what a reader scans first) names every command.
    from statesaga.cli import main

    page = (ROOT / "docs" / "operating" / "cli.md").read_text(encoding="utf-8")
    listed = re.search(r"\*\*Commands:\*\*(.*?)\n\n", page, re.S)
    assert listed, "docs/operating/cli.md: no **Commands:** list"
    missing = [name for name in main.commands if f"`{name}`" not in listed.group(1)]
    assert not missing, f"docs/operating/cli.md's list of commands lacks {missing}"
