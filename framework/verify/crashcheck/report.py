"""The crash matrix's report: one table row per cell (scenario, boundary, the job killed
there, the outcome, the side effects and the verdict), as `statesaga check-crashes` prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .matrix import CellResult


def format_table(results: Sequence[CellResult]) -> str:
    """The boundary × outcome table, one row per cell."""
    header = ("scenario", "boundary", "n", "job", "killed", "outcome", "effects", "check")
    rows = [header]
    for r in results:
        e = r.event
        effects = f"+{r.applies} -{r.undos}" + (f" ({r.repeats} repeat)" if r.repeats else "")
        check = "ok" if r.ok else "FAIL: " + "; ".join(r.problems or [f"expected {r.expected}"])
        if r.ok and r.status != r.expected and r.note:
            check = f"ok ({r.note})"
        rows.append(
            (
                r.scenario,
                e.boundary if e else "(no crash)",
                str(e.n) if e else "",
                e.label if e else "",
                "yes" if r.killed else "no",
                r.status,
                effects,
                check,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    summary = Counter("ok" if r.ok else "failed" for r in results)
    lines.append(f"{len(results)} runs: {summary['ok']} ok, {summary['failed']} failed")
    return "\n".join(lines)


__all__ = ["format_table"]
