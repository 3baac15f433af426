"""What every benchmark shares: the result row, the machine, the no-op saga, percentiles."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from statesaga import Registry
from statesaga.definitions.load import WorkflowDefinition, load_definition

Mode = Literal["smoke", "quick", "full"]
STEPS = 5


@dataclass
class Row:
    """One line of the table: ours against the baseline, and the target on their ratio."""

    name: str
    ours: float | None = None
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    status: Literal["ok", "pending", "error"] = "ok"
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> dict[str, Any]:
    """Cores, CPU model and Python version: a ratio is only comparable on the same machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
    }


def noop(ctx: object) -> None:
    return None


def noop_registry() -> Registry:
    registry = Registry()
    for i in range(STEPS):
        registry.register_handler(f"noop{i}", noop)
    registry.register_handler("undo", noop)  # the compensation of the started-marker rows
    return registry


def noop_definition(steps: int = STEPS) -> WorkflowDefinition:
    """Five sequential no-op steps, no compensation: the framework's cost and nothing else."""
    return load_definition(
        {
            "workflow": "bench_noop",
            "steps": [{"name": f"s{i}", "action": f"noop{i}"} for i in range(steps)],
        }
    )


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of samples."""
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def rss_bytes() -> int:
    """The resident set size of this process now (not the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def latency_row(where: str, ours: list[float], peer: list[float] | None, peer_label: str) -> Row:
    """Row 6: start -> COMPLETED of a 3-step saga (seconds in, ms out), p50 and p99 against a
    peer's; the ratio is our p50 over theirs, so lower is faster. No peer: a pending row."""
    p50, p99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
    row = Row(
        name=f"6. latency start → COMPLETED, 3-step saga, {where} (p50; p99 {p99:.1f} ms)",
        ours=p50,
        unit="ms p50",
        target="(what users feel)",
        details={"statesaga_ms": {"p50": p50, "p99": p99}, "samples": len(ours)},
    )
    if peer is None:
        row.status = "pending"
        row.note = f"{peer_label} not run"
        return row
    q50, q99 = percentile(peer, 50) * 1000, percentile(peer, 99) * 1000
    row.baseline, row.ratio = q50, p50 / q50
    row.note = (
        f"{len(ours)} workflows one at a time each; statesaga p99 {p99:.1f} ms; {peer_label}"
        f" p50 {q50:.1f} ms, p99 {q99:.1f} ms; ratio = our p50 / theirs (lower is faster)"
    )
    row.details["peer_ms"] = {"p50": q50, "p99": q99}
    return row
