"""`python -m benchmarks`: every benchmark in one run, a table on stdout and a JSON file.

    python -m benchmarks            # the full run (several minutes: 100,000 stored workflows)
    python -m benchmarks --quick    # under a minute, reduced sizes (the output says which)
    python -m benchmarks --smoke    # seconds; what tests/test_benchmarks_quick.py runs
    python -m benchmarks --only transition,roundtrips --out results.json

Each row is a ratio of two things measured side by side in this run on this machine. Nothing
here fails: a missed target is a row marked "missed", a benchmark that cannot run a row
marked "pending" or "error" with the reason. Results go to benchmarks/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from . import dashboard, distributed, embedded, roundtrips, scale, scaling, transition
from ._common import Mode, Row, machine

RESULTS = Path(__file__).resolve().parent / "results"

BENCHMARKS: dict[str, Callable[[Mode], Row | list[Row]]] = {
    "transition": transition.run,
    "embedded": embedded.run,
    "distributed": distributed.run,
    "scale": scale.run,
    "roundtrips": roundtrips.run,
    "dashboard": dashboard.run,
    "scaling": scaling.run,
}


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(row: Row) -> str:
    if row.status != "ok":
        return row.status
    return {True: "met", False: "missed", None: "–"}[row.met]


def table(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    lines = [
        "| benchmark | statesaga | baseline | unit | ratio | target | result | notes |",
        "| --- | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for r in rows:
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}×"
        lines.append(
            f"| {r.name} | {_fmt(r.ours)} | {_fmt(r.baseline)} | {r.unit} | {ratio}"
            f" | {r.target} | {_verdict(r)} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="reduced sizes, under a minute")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (for the test)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: results/)")
    args = parser.parse_args(argv)
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    info = machine()
    print(
        f"statesaga benchmarks ({mode}) on {info['cores']} cores, {info['cpu']},"
        f" Python {info['python']}",
        flush=True,
    )
    rows: list[Row] = []
    timings: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name](mode)
            rows.extend(result if isinstance(result, list) else [result])
        except Exception as exc:  # one broken benchmark must not hide the others' rows
            traceback.print_exc()
            rows.append(Row(name=name, status="error", note=f"{type(exc).__name__}: {exc}"))
        timings[name] = time.perf_counter() - t0
        print(f"  {name}: {timings[name]:.1f} s", file=sys.stderr, flush=True)

    print(table(rows))
    out = args.out
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"bench-{mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "mode": mode,
                "at": datetime.now(UTC).isoformat(),
                "machine": info,
                "seconds": timings,
                "rows": [r.to_dict() for r in rows],
            },
            indent=2,
            default=str,
        )
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
