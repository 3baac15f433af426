"""The web dashboard and HTTP API (`statesaga serve`; `pip install 'statesaga[ui]'`).

Every asset ships in the package (no CDN): the pages work offline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import ServeSettings
    from .app import create_app, watch_store  # noqa: F401

__all__ = ["ServeSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Lazily: `statesaga list` reads the listing (statesaga.web.query) without importing
    # Starlette, which the ui extra brings.
    if name == "ServeSettings":
        from .actions import ServeSettings

        return ServeSettings
    if name in ("create_app", "watch_store"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the dashboard with uvicorn until interrupted."""
    from dataclasses import replace

    import uvicorn

    from .app import create_app, watch_store  # noqa: F401

    if settings.allowed_hosts is None and _loopback(host):
        settings = replace(settings, allowed_hosts=("127.0.0.1", "localhost", "[::1]", "::1"))
    app = create_app(settings)
    watch_store(app)
    # uvicorn's records (start-up, one per request) go through the CLI's logging, so they
    # come in its format (--log-format) and at its level (--log-level).
    uvicorn.run(app, host=host, port=port, log_config=None, log_level=None, access_log=True)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
