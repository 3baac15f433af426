"""The arango:// store: workflow documents in ArangoDB (python-arango), for many machines.

`settings` parses the URL, `queries` holds every AQL statement and index, `client` is the link
to the server (HTTP client, connecting, what failures mean), `store` the Store itself.
"""

from __future__ import annotations

try:
    import arango  # noqa: F401 (the check that the extra is installed, before the modules)
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        f"the arango:// store needs python-arango ({exc}); "
        "install it with: pip install 'statesaga[arango]'"
    ) from exc

from .queries import INDEXES, QUERIES  # noqa: TID251
from .settings import ENV_PASSWORD, ENV_USER, ArangoSettings  # noqa: TID251
from .store import ArangoStore  # noqa: TID251

__all__ = ["ENV_PASSWORD", "ENV_USER", "INDEXES", "QUERIES", "ArangoSettings", "ArangoStore"]
