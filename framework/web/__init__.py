"""The web dashboard and HTTP API (`statesaga serve`; `pip install 'statesaga[ui]'`).

Every asset ships in the package (no CDN): the pages work offline.
"""

from __future__ import annotations

from .actions import ServeSettings
from .app import create_app

__all__ = ["ServeSettings", "create_app", "serve"]


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the dashboard with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=True)
