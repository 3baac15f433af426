"""One process of row 7p (benchmarks/scaling.py): the embedded engine on a shared SQLite file
with `--threads` workflows at once, pinned to `--cpu` (statesaga.runtime.cpu), running a
block of workflows for each line `N` on stdin and answering {"seconds": s} on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from statesaga.runtime.cpu import pin_to_cpu

from .embedded import Statesaga


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        pin_to_cpu(args.cpu)
    side = Statesaga(Path(args.db), in_flight=args.threads)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"seconds": side.block(int(line))}), flush=True)
    side.close()


if __name__ == "__main__":
    main()
