"""`python -m statesaga.verify.crashcheck SPEC`: one crash worker process (see .process)."""

from __future__ import annotations

import json
import sys

from .process import worker_main

if __name__ == "__main__":
    sys.exit(worker_main(json.loads(sys.argv[1])))
