"""The crash matrix: run a saga again and again, SIGKILL the worker process at each boundary of
a job in turn, recover, and check that nothing was lost or applied twice.

One module per part: `ledger` (the side effects handlers record, and their check), `process`
(the crash worker process and its probe), `matrix` (the cells: clean run, kill, recovery,
checks), `plans` (an agent's plan instead of a saga: revised mid-flight, its approvals
answered, judged by the plan's invariants) and `report` (the table).

Queues: `inline://` (the embedded default: the worker process itself drains the jobs; what was
queued dies with it, and recovery re-enqueues it from the store) or a queue served by workers
such as `rq://…` (served in the crash process as `statesaga worker` would serve it). Stores:
any shared one (a SQLite file by default, one per cell).

Use it from the command line (`statesaga check-crashes trip.yaml --input '{...}'`) or from a
test: `results = check_crashes([Scenario(...)]); assert all(r.ok for r in results)`.
"""

from __future__ import annotations

from .ledger import LEDGER_ENV, LEDGER_SCOPE_ENV, Ledger, LedgerRecord, check_ledger
from .matrix import CellResult, Scenario, check_crashes, lost_attempt_cost_a_retry, trip_scenarios
from .plans import PlanRun
from .process import BOUNDARIES, BoundaryEvent, make_probe
from .report import format_table

__all__ = [
    "BOUNDARIES",
    "LEDGER_ENV",
    "LEDGER_SCOPE_ENV",
    "BoundaryEvent",
    "CellResult",
    "Ledger",
    "LedgerRecord",
    "PlanRun",
    "Scenario",
    "check_crashes",
    "check_ledger",
    "format_table",
    "lost_attempt_cost_a_retry",
    "make_probe",
    "trip_scenarios",
]
