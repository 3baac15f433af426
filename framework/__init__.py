"""statesaga: durable workflows with saga compensation, as declarative state tables."""

from __future__ import annotations

from .charts.chart import Chart, load_chart
from .charts.machine import CompiledChart
from .charts.spec import ChartSpec
from .context import StepContext
from .definitions.load import WorkflowDefinition, load_definition
from .engine import Engine
from .errors import (
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
from .models import (
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
from .plugins import open_queue, open_store
from .ports import Job, Queue, Store
from .registry import Registry, handler
from .resources import __version__, examples_dir, statecharts_dir

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
    "examples_dir",
    "load_chart",
    "statecharts_dir",
]
