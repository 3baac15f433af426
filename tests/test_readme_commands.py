"""Every command in README.md, diagrams/README.md and the manual's pages (docs/, in the order
of mkdocs.yml's nav) runs as written (issues 17 and 32).

The fenced ```bash blocks are extracted and each runs as one bash script, in document order, in
a copy of the repository (so relative paths work and nothing is written into the work tree),
with this test environment's `statesaga` and `python` first on PATH. ```console blocks run
their `$ ` lines and check the output shown under each (`...` stands for more lines). A block
titled with a file name (```python title="order_handlers.py"), as the tutorial shows the files
it has the reader write, is written to that file in the copy, so the commands after it find it.

Adapting. Only what cannot be run as written is changed, by the table ADAPT below, each entry
with its reason: example workflow ids become real ones, the placeholders URL / WF-ID / `...`
become this run's store, a loop (`--every`) is stopped after a few seconds, the RQ section's
Redis at 127.0.0.1:6379 becomes the private redis-server of the test session (never the
shared one). A block that needs a service this machine cannot run is skipped by putting

    <!-- readme-test: skip: WHY -->

on the line before its fence; SKIP_COMMANDS skips single commands the same way. A new README
section with runnable commands needs nothing here: its block is found and run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkout_helpers import copy_checkout

ROOT = Path(__file__).resolve().parents[1]


def _site_pages() -> list[Path]:
    """The manual's pages in the order of its nav (what a reader follows), then any other."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    docs = ROOT / config.get("docs_dir", "docs")
    ordered = [docs / p for p in walk(config["nav"]) if (docs / p).is_file()]
    rest = sorted(p for p in docs.rglob("*.md") if p not in ordered and "_hooks" not in p.parts)
    return ordered + rest


DOCS = [ROOT / "README.md", ROOT / "diagrams" / "README.md", *_site_pages()]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
TITLE = re.compile(r'\btitle="(?P<path>[^"]+)"')
MARK = re.compile(r"<!--\s*readme-test:\s*skip\s*:?\s*(?P<why>.*?)\s*-->")
WF_ID = re.compile(r"\bWF-\d{8}-[0-9a-f]{8}\b")
TRIP_INPUT = json.dumps(
    {"origin": "TPE", "destination": "NRT", "nights": 2, "amount": 10, "email": "a@b.c"}
)

# (pattern, replacement, why). Applied to each command in order; `{redis}` is filled in.
ADAPT: list[tuple[str, str, str]] = [
    (r"127\.0\.0\.1:6379", "{redis}", "the RQ section's Redis: this session's private server"),
    (
        r"^(statesaga recover .*--every \d+.*)$",
        r"timeout 5 \1 || [ $? -eq 124 ]",
        "--every scans until interrupted: stopped after 5 s",
    ),
    (r"--store URL --queue URL", "--store sqlite:///statesaga.db --queue inline://", "URL"),
    (r"(statesaga recover .*) \.\.\.", r"\1 --store sqlite:///statesaga.db", "`...`: the store"),
    (r"\bWF-ID\b", "$(running_wf)", "a workflow left running, to cancel"),
    (WF_ID.pattern, "$(last_wf)", "an example id: the newest workflow of the store in use"),
    (r" \[--check\]", " --check", "`[--check]` is optional: run with it (read-only)"),
]
SKIP_COMMANDS: list[tuple[str, str]] = [
    (r"python -m pytest", "the test suite itself: `.ci/run` runs this command as written"),
]

PRELUDE = f"""
set -eo pipefail
trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; wait || true' EXIT
TRIP='{TRIP_INPUT}'
last_wf() {{
  local id
  id=$(statesaga list "$@" --limit 1 | cut -d' ' -f1)
  if [ -z "$id" ]; then
    statesaga run examples/trip.yaml --input "$TRIP" "$@" >/dev/null 2>&1 || true
    id=$(statesaga list "$@" --limit 1 | cut -d' ' -f1)
  fi
  echo "$id"
}}
mkdir -p "$HOME/.config/fish/completions"  # a fish user has it; HOME is a scratch folder
running_wf() {{
  statesaga run examples/trip.yaml --input "$TRIP" --timeout 0 >/dev/null 2>&1 || true
  statesaga list --status running --limit 1 | cut -d' ' -f1
}}
"""


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    body: str
    skip: str | None
    path: str | None = None  # a titled block: the file it shows

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        title = TITLE.search(m.group("attrs"))
        if m.group("lang") not in ("bash", "sh", "console") and title is None:
            continue
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        line = text.count("\n", 0, m.start()) + 1
        why = (mark.group("why") or "no reason given") if mark else None
        path = title.group("path") if title else None
        out.append(Block(doc, line, m.group("lang"), m.group("body"), why, path))
    return out


def commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comment lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(_uncomment(pending + line))
        pending = ""
    if pending:
        out.append(pending)
    # A command whose quoted argument spans lines (a JSON --input) is one command.
    joined: list[str] = []
    for cmd in out:
        if joined and _open_quote(joined[-1]):
            joined[-1] += " " + cmd.strip()
        else:
            joined.append(cmd)
    return joined


def _uncomment(cmd: str) -> str:
    """The command without its trailing `# comment` (bash ignores it; an adaptation appended
    to the line must not end up inside it)."""
    quote = None
    for i, ch in enumerate(cmd):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or cmd[i - 1] in " \t"):
            return cmd[:i].rstrip()
    return cmd.rstrip()


def _open_quote(cmd: str) -> bool:
    return cmd.count("'") % 2 == 1


def adapt(cmd: str, redis: str) -> str:
    if "zsh_source" in cmd:  # a line for ~/.zshrc: run by zsh, where zsh is installed
        if shutil.which("zsh") is None:
            return ": 'skipped: zsh is not installed'"
        return f"zsh -c {shlex.quote('autoload -Uz compinit && compinit && ' + cmd)}"
    for reason_pattern, why in SKIP_COMMANDS:
        if re.search(reason_pattern, cmd):
            return f": {shlex.quote('skipped: ' + why)}"
    for pattern, replacement, _why in ADAPT:
        cmd = re.sub(pattern, replacement.replace("{redis}", redis), cmd, flags=re.M)
    return cmd


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_the_docs_have_commands_to_run() -> None:
    runnable = [b for b in ALL if b.skip is None]
    assert len(runnable) >= 6, [b.id for b in ALL]
    assert all(b.skip for b in ALL if b.skip is not None)  # every skip says why


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    env["HOME"] = str(home)  # completion scripts and caches land here, not in a real home
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def _bash(script: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workspace,
        env=_env(workspace.parent / "home"),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _redis_hostport(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


DOCS_WITH_BLOCKS = [doc for doc in DOCS if any(b.doc == doc for b in ALL)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "doc", DOCS_WITH_BLOCKS, ids=[str(d.relative_to(ROOT)) for d in DOCS_WITH_BLOCKS]
)
def test_document_runs_as_written(
    doc: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A document's blocks run in its order, in a copy of its own: a reader follows one page
    from the top, and a block may need a file an earlier block of the page wrote. One test
    per page keeps that order under a shuffled run (`-p randomly`, as .ci/run does)."""
    workspace = copy_checkout(tmp_path / "statesaga")  # the documents' paths resolve there
    skipped = []
    for block in (b for b in ALL if b.doc == doc):
        if block.skip is not None:
            skipped.append(block.id)
            continue
        _run_block(block, workspace, request)
    if skipped and len(skipped) == sum(1 for b in ALL if b.doc == doc):
        pytest.skip(f"every block skipped: {', '.join(skipped)}")


def _run_block(block: Block, workspace: Path, request: pytest.FixtureRequest) -> None:
    if block.path is not None:
        target = workspace / block.path
        assert workspace in target.resolve().parents, f"{block.id}: {block.path} is outside"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body, encoding="utf-8")
        return
    if block.lang == "console":
        _run_console(block, workspace)
        return
    cmds = commands(block.body)
    redis = ""
    if any("127.0.0.1:6379" in c for c in cmds):
        redis = _redis_hostport(request.getfixturevalue("redis_url"))
    script = PRELUDE + "\n".join(
        f"echo {shlex.quote('+ ' + adapt(c, redis))} >&2\n{adapt(c, redis)}" for c in cmds
    )
    res = _bash(script, workspace)
    assert res.returncode == 0, (
        f"{block.id} failed (exit {res.returncode}):\n{res.stderr[-4000:]}\n{res.stdout[-2000:]}"
    )


# The console transcript of `validate` shows a broken.yaml; this is the file behind it.
BROKEN = (
    "chart: bad\ninitial: A\nstates:\n  - name: A\n  - name: A\n  - name: B\ntransitions:\n"
    "  - {trigger: go, source: A, dest: C}\n"
)


def _run_console(block: Block, workspace: Path) -> None:
    (workspace / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    steps: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    assert steps, f"{block.id}: a console block with no `$ ` command"
    for cmd, shown in steps:
        res = _bash(cmd, workspace)
        got = (res.stdout + res.stderr).splitlines()
        for want in shown:
            if want.strip() in ("", "..."):
                continue
            assert want in got, f"{block.id}: `{cmd}` did not print {want!r}:\n{got}"
