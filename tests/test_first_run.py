"""What a newcomer meets on a first run (issue 32): hints that can be pasted as they are, even
from a virtual environment that is not activated; no log line before `--help`; a failed step's
WARNING after the line that shows it failing; counts in words ("1 attempt", "3 attempts")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from statesaga import Engine, load_definition, open_queue, open_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("statesaga")  # what `pip install` put in the venv


def _env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATESAGA_", "OTEL_"))}
    env["PATH"] = path
    env["COLUMNS"] = "200"
    return env


@pytest.mark.slow  # real `statesaga` processes
def test_demo_hints_name_the_script_when_the_venv_is_not_activated(tmp_path: Path) -> None:
    # The shell cannot find `statesaga` (the venv's bin is not on PATH): a hint saying
    # `statesaga status ...` would answer "command not found", so it names the script's path.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "statesaga").exists())  # fmt: skip
    res = subprocess.run(
        [str(SCRIPT), "demo"], cwd=tmp_path, env=_env(path), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    hints = [line.strip() for line in res.stdout.splitlines() if "--store" in line]
    assert hints and all(h.startswith(f"{SCRIPT} ") for h in hints), hints
    assert ". .venv/bin/activate" in res.stdout
    # and the hint runs as printed
    status = subprocess.run(
        [*hints[0].split()], cwd=tmp_path, env=_env(path), capture_output=True, text=True
    )
    assert status.returncode == 0 and "COMPENSATED" in status.stdout, status.stderr


@pytest.mark.slow  # real `statesaga` processes
def test_demo_hints_say_statesaga_when_the_shell_finds_it(tmp_path: Path) -> None:
    path = f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    res = subprocess.run(
        ["statesaga", "demo"], cwd=tmp_path, env=_env(path), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert re.search(r"^  statesaga status WF-\S+ --store", res.stdout, re.M), res.stdout
    assert "activate" not in res.stdout


@pytest.mark.slow  # real `statesaga` processes
def test_the_failed_steps_warning_follows_the_line_showing_the_failure(tmp_path: Path) -> None:
    # stdout and stderr into one pipe, as a terminal shows them
    res = subprocess.run(
        [str(SCRIPT), "demo"], cwd=tmp_path, env=_env(os.environ.get("PATH", "")),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip
    lines = res.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if re.search(r"charge_payment\s+fail\s", line))
    warning = next(i for i, line in enumerate(lines) if " WARNING " in line)
    assert fail < warning, "\n".join(lines[fail - 3 : warning + 3])


@pytest.mark.slow  # real `statesaga` processes
def test_help_prints_no_log_line_first(tmp_path: Path) -> None:
    # With the SDK installed and an exporter asked for, a command that sets up OpenTelemetry
    # logs what it set up, at INFO for `serve` and `worker`: never for their --help.
    env = _env(os.environ.get("PATH", ""))
    env["OTEL_TRACES_EXPORTER"] = "console"
    for command in ("serve", "worker", "run"):
        res = subprocess.run(
            [str(SCRIPT), command, "--help"], cwd=tmp_path, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        assert res.returncode == 0
        assert res.stderr == "" and res.stdout.startswith("Usage: statesaga"), (
            res.stderr + res.stdout[:200]
        )


def test_a_sleeping_step_says_until_when(tmp_path: Path) -> None:
    from statesaga.cli.console import waiting_on

    definition = load_definition(
        {
            "workflow": "nap",
            "handlers": "statesaga.examples.expense_handlers",
            "steps": [{"name": "nap", "duration": 3600}],
        }
    )
    engine = Engine(open_store("memory://"), open_queue("inline://"))
    wf = engine.start(definition, {})
    (line,) = waiting_on(engine.get(wf.id))
    assert re.fullmatch(r"step nap sleeps until \d\d:\d\d:\d\d UTC \(in \d+s\)", line), line


# f"{s.attempts} attempt(s)", f"{len(undone)} completed step(s)": a number, then a noun "(s)"
COUNTED = re.compile(r"\{(?:len\(|\w*count|[\w.]*attempts\b|n\})[^}]*\}?\s+[\w -]*\w\(s\)")


def test_no_message_counts_with_an_s_in_brackets() -> None:
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for folder in ("framework", "adapters")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if COUNTED.search(line)
    ]
    assert not found, "say it with statesaga.wording.counted:\n" + "\n".join(found)


def test_counted_words() -> None:
    from statesaga.wording import counted

    assert counted(1, "attempt") == "1 attempt"
    assert counted(3, "completed step") == "3 completed steps"
    assert counted(0, "retry", "retries") == "0 retries"
    assert shutil.which("bash")  # the other tests of this file run real processes
