"""The checkout the tests run from, and copies of it for tests that build, install or write
into the project (a build writes `statesaga.egg-info` next to the source, which every test
process reads first on sys.path: such work happens in a copy, never in the checkout)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What a fresh clone does not have: environments, builds, caches, databases, node modules.
_NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "node_modules",
    "__pycache__",
    "*.db*",
    ".*_cache",
    "out",
)


def copy_checkout(dest: Path) -> Path:
    """The project's files at `dest`, as a fresh clone would have them."""
    shutil.copytree(ROOT, dest, ignore=_NOT_IN_A_CLONE)
    return dest
