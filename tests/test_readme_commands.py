"""Every command in README.md and diagrams/README.md runs as written (issue 17).

The fenced ```bash blocks are extracted and each runs as one bash script, in README order, in
a copy of the repository (so relative paths work and nothing is written into the work tree),
with this test environment's `statesaga` and `python` first on PATH. ```console blocks run
their `$ ` lines and check the output shown under each (`...` stands for more lines).

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

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "diagrams" / "README.md"]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
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

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") not in ("bash", "sh", "console"):
            continue
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        line = text.count("\n", 0, m.start()) + 1
        why = (mark.group("why") or "no reason given") if mark else None
        out.append(Block(doc, line, m.group("lang"), m.group("body"), why))
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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the repository as a fresh clone would have it (no venv, no node_modules,
    no databases), where the README's relative paths resolve."""
    work = tmp_path_factory.mktemp("readme") / "statesaga"
    ignore = shutil.ignore_patterns(
        ".venv",
        "node_modules",
        "build",
        "*.egg-info",
        "*.db*",
        "__pycache__",
        ".git",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "out",
    )
    shutil.copytree(ROOT, work, ignore=ignore)
    yield work


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


@pytest.mark.slow
@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_readme_block_runs_as_written(
    block: Block, workspace: Path, request: pytest.FixtureRequest
) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
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
