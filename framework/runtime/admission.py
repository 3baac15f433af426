"""Admitting a definition to a runtime: its handlers registered and present, its step
lifecycle the one the engine runs. Done once per definition object, before its first start,
so a saga that could not run is refused before anything is stored."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ..definitions.load import WorkflowDefinition
from ..errors import DefinitionError

if TYPE_CHECKING:
    from .runtime import Runtime


class Admission:
    """The definitions a runtime has admitted (held weakly: a definition dropped by its
    caller is forgotten)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._loaded: weakref.WeakSet[WorkflowDefinition] = weakref.WeakSet()

    def admit(self, definition: WorkflowDefinition) -> None:
        if definition in self._loaded:
            return
        rt = self.rt
        definition.load_handlers(rt.registry, rt.allow_list())
        definition.check_handlers(rt.registry)
        if definition.spec.step_lifecycle is not None:
            chart = definition.step_chart()
            if chart is not None and chart.name != rt.step_chart.name:
                raise DefinitionError(
                    [
                        definition.lines.problem(
                            ("step_lifecycle",),
                            f"this saga runs on the step lifecycle {chart.name!r} but the engine "
                            f"runs {rt.step_chart.name!r}: build it with "
                            "Engine(..., step_chart=definition.step_chart())",
                        )
                    ]
                )
        self._loaded.add(definition)
