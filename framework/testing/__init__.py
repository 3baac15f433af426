"""Conformance suites for adapter authors: the port contracts as pytest tests.

Subclass `StoreConformance` (provide a `store` fixture) or `QueueConformance` (provide a
`queue` fixture) in your plugin's tests; see `store_suite` and `queue_suite` for details.
Needs pytest, which statesaga itself does not depend on.
"""

from __future__ import annotations

from .queue_suite import QueueConformance, Recorder
from .store_suite import StoreConformance, make_workflow, rich_workflow

__all__ = ["QueueConformance", "Recorder", "StoreConformance", "make_workflow", "rich_workflow"]
