"""examples/deploy/: every command the systemd unit and the compose file run is one the CLI
accepts, the unit passes `systemd-analyze verify`, and Redis there keeps its data."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from statesaga.cli import main

DEPLOY = Path(__file__).parents[1] / "examples" / "deploy"


def _env_file() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "statesaga.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {k: v for k, v in pairs}


def _exec_start() -> list[str]:
    unit = (DEPLOY / "statesaga-worker.service").read_text()
    [line] = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    env = _env_file()
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line.removeprefix("ExecStart="))
    return command.split()


def _parses(argv: list[str]) -> None:
    """The CLI accepts these arguments (parsed as the command would be, not run)."""
    assert Path(argv[0]).name == "statesaga", argv
    group_ctx = main.make_context("statesaga", argv[1:], resilient_parsing=False)
    name, command, rest = main.resolve_command(group_ctx, argv[1:])
    assert command is not None, argv
    command.make_context(name or "", rest, parent=group_ctx)


def test_the_systemd_unit_runs_a_command_the_cli_accepts() -> None:
    argv = _exec_start()
    _parses(argv)
    assert "--processes" in argv and "--recover-every" in argv and "--with-scheduler" in argv
    env = _env_file()
    assert env["STATESAGA_STORE"].startswith("redis://")
    assert env["STATESAGA_QUEUE"].startswith("rq://")


def test_the_compose_services_run_commands_the_cli_accepts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "recovery"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )
    for name in ("worker", "recovery"):
        assert services[name]["restart"] == "unless-stopped"
        _parses(services[name]["command"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "statesaga-worker.service").read_text()
    binary = Path(sys.executable).with_name("statesaga")
    unit = unit.replace("/srv/statesaga/.venv/bin/statesaga", str(binary))
    target = tmp_path / "statesaga-worker.service"
    target.write_text(unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        # The host running the tests need not have the unit's user or directories.
        if line.strip() and "statesaga" in line and "/srv/statesaga" not in line
    ]
    assert proc.returncode == 0 and problems == [], proc.stdout + proc.stderr
