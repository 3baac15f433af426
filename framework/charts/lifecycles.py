"""The shipped lifecycle charts (workflow, step, todo), each checked against the models' status
enum that the engine stores: the table and the enum must name the same states."""

from __future__ import annotations

from enum import Enum
from functools import cache

from ..errors import DefinitionError, Problem
from ..models import StepStatus, TodoStatus, WorkflowStatus
from .chart import Chart, shipped_chart

ENUMS: dict[str, type[Enum]] = {
    "workflow": WorkflowStatus,
    "step": StepStatus,
    "todo": TodoStatus,
}


@cache
def lifecycle(name: str) -> Chart:
    """A shipped lifecycle chart, its states checked against the Python enum."""
    if name not in ENUMS:
        raise KeyError(f"no shipped lifecycle {name!r}; known: {', '.join(ENUMS)}")
    chart = shipped_chart(name)
    check_enum(chart, ENUMS[name])
    return chart


def check_enum(chart: Chart, enum: type[Enum]) -> None:
    """The enum and the table must name exactly the same states."""
    in_table = set(chart.states)
    in_enum = {m.value for m in enum}
    if in_table != in_enum:
        raise DefinitionError(
            [
                Problem(
                    f"states differ from {enum.__name__}: only in table "
                    f"{sorted(in_table - in_enum)}, only in enum {sorted(in_enum - in_table)}",
                    chart.file,
                )
            ]
        )
