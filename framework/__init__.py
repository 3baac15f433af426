"""statesaga: durable workflows with saga compensation, as declarative state tables."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("statesaga")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"


def statecharts_dir() -> Path:
    """Where the shipped lifecycle tables are installed."""
    import importlib

    return Path(str(importlib.import_module("statesaga.statecharts").__file__)).parent


def examples_dir() -> Path:
    """Where the example sagas are installed."""
    import importlib

    return Path(str(importlib.import_module("statesaga.examples").__file__)).parent


from .chart import Chart, ChartSpec, load_chart  # noqa: E402
from .context import StepContext  # noqa: E402
from .definition import WorkflowDefinition, load_definition  # noqa: E402
from .engine import Engine  # noqa: E402
from .errors import (  # noqa: E402
    AdapterError,
    CompensationError,
    ConflictError,
    DefinitionError,
    NotFoundError,
    Problem,
    RegistryError,
    StateError,
    StatesagaError,
    TransitionError,
)
from .machine import CompiledChart  # noqa: E402
from .models import (  # noqa: E402
    CompensationAction,
    CompensationStrategy,
    HistoryEntry,
    RetryPolicy,
    SagaStep,
    StepError,
    StepStatus,
    TodoStatus,
    WorkflowState,
    WorkflowStatus,
)
from .plugins import open_queue, open_store  # noqa: E402
from .ports import Job, Queue, Store  # noqa: E402
from .registry import Registry, handler  # noqa: E402

__all__ = [
    "AdapterError",
    "Engine",
    "StepContext",
    "WorkflowDefinition",
    "handler",
    "load_definition",
    "open_queue",
    "open_store",
    "Chart",
    "ChartSpec",
    "CompensationAction",
    "CompensationError",
    "CompensationStrategy",
    "CompiledChart",
    "ConflictError",
    "DefinitionError",
    "HistoryEntry",
    "Job",
    "NotFoundError",
    "Problem",
    "Queue",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "SagaStep",
    "StateError",
    "StatesagaError",
    "StepError",
    "StepStatus",
    "Store",
    "TodoStatus",
    "TransitionError",
    "WorkflowState",
    "WorkflowStatus",
    "__version__",
    "load_chart",
    "statecharts_dir",
]
