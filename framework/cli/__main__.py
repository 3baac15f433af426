"""`python -m statesaga.cli`: the `statesaga` command, for environments without its script."""

from __future__ import annotations

import os
import sys

from . import main

# `python -m` puts the working directory first on sys.path, where a planted `redis.py` would
# shadow the library; allowed handler modules are looked up there last.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]
main()
