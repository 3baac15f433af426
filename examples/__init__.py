"""Runnable example sagas (installed as statesaga.examples): YAML tables plus handler modules."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent


def path(name: str) -> Path:
    """The YAML file of an example saga, e.g. path("trip")."""
    return DIR / f"{name}.yaml"
