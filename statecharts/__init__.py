"""The lifecycle tables shipped with statesaga: workflow, step and todo."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent
LIFECYCLES = ("workflow", "step", "todo")


def path(name: str) -> Path:
    """The YAML file of a shipped lifecycle."""
    return DIR / f"{name}.yaml"
