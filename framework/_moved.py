"""Module paths of earlier releases, kept importable: `from statesaga.managers import ...` in a
user's code, or a name an existing deployment's configuration holds, still finds the module in
its new place. One table, read only when an old name is imported; nothing here imports eagerly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import CodeType, ModuleType
from typing import NoReturn

MOVED: dict[str, str] = {
    "statesaga.chart": "statesaga.charts.chart",
    "statesaga.machine": "statesaga.charts.machine",
    "statesaga.lifecycles": "statesaga.charts.lifecycles",
    "statesaga.effects": "statesaga.runtime.effects",
    "statesaga.invoke": "statesaga.runtime.handlers",
    "statesaga.heartbeat": "statesaga.runtime.heartbeat",
    "statesaga.recovery": "statesaga.runtime.recovery",
    "statesaga.outage": "statesaga.runtime.outage",
    "statesaga.telemetry": "statesaga.observability.telemetry",
    "statesaga.otel": "statesaga.observability.otel",
    "statesaga.logs": "statesaga.observability.logs",
    "statesaga.console": "statesaga.cli.console",
    "statesaga.supervisor": "statesaga.cli.supervisor",
    "statesaga.simulation": "statesaga.verify.simulation",
    "statesaga.standins": "statesaga.verify.standins",
    "statesaga.invariants": "statesaga.verify.invariants",
    "statesaga.crashcheck": "statesaga.verify.crashcheck",
    "statesaga.managers": "statesaga.compat.managers",
    "statesaga.todo": "statesaga.compat.todo",
    "statesaga.allowlist": "statesaga.security.allowlist",
    "statesaga.redact": "statesaga.security.redact",
    "statesaga.limits": "statesaga.security.limits",
    "statesaga.jobguard": "statesaga.adapters.queues.rq.jobguard",
}


#: Public names of earlier releases that left their module: (module, name) -> where it is now.
#: Importing one fails with that place named, not with "cannot import name".
MOVED_NAMES: dict[tuple[str, str], str] = {
    ("statesaga.worker", "make_rq_worker"): "statesaga.adapters.queues.rq.worker.make_rq_worker",
    ("statesaga.models", "ACTIVE_WORKFLOW"): "statesaga.vocabulary.WORKFLOW_IN_FLIGHT",
    ("statesaga.models", "IN_FLIGHT_STEP"): "statesaga.vocabulary.STEP_IN_FLIGHT",
}


def moved_name(module: str, name: str) -> NoReturn:
    """A module's `__getattr__`: the error for a name it no longer has."""
    now = MOVED_NAMES.get((module, name))
    if now is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    # ImportError, not AttributeError: `from m import x` would replace an AttributeError's words.
    raise ImportError(f"{module}.{name} moved: import it from {now}", name=module)


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its new name; the import under the old
        one has just stamped the old name's spec onto it, so it gets its own spec back (runpy,
        reload and pickling read the module's name from it)."""
        module.__spec__ = self.own_spec

    def get_code(self, fullname: str) -> CodeType:
        """`python -m <old name>` (runpy) runs this: the module itself runs under its new name,
        where its relative imports resolve (and a package runs its __main__)."""
        source = (
            f"import runpy\nrunpy.run_module({self.target!r}, run_name=__name__, alter_sys=True)\n"
        )
        return compile(source, f"<{fullname}, now {self.target}>", "exec")


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
