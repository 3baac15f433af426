"""What the security tests share: the CLI run as an operator runs it, and the trip example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRIP_INPUT = {"origin": "TPE", "destination": "NRT", "nights": 1, "amount": 5, "email": "a@b.c"}


def statesaga(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`statesaga ARGS` in `cwd`, with no STATESAGA_* variable but those in `env`."""
    script = Path(sys.executable).with_name("statesaga")
    cmd = [str(script)] if script.exists() else [sys.executable, "-P", "-m", "statesaga.cli"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA_")}
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
