"""What the installed distribution carries: its version and where its shipped files are."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("statesaga")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"


def statecharts_dir() -> Path:
    """Where the shipped lifecycle tables are installed."""
    return Path(str(importlib.import_module("statesaga.statecharts").__file__)).parent


def examples_dir() -> Path:
    """Where the example sagas are installed."""
    return Path(str(importlib.import_module("statesaga.examples").__file__)).parent
