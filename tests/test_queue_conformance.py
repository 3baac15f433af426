"""The Queue conformance suite, run against every queue adapter (add a row to QUEUES)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from statesaga.adapters.queues.inline import InlineQueue
from statesaga.ports import Queue
from statesaga.testing import QueueConformance

QUEUES: dict[str, Callable[[pytest.FixtureRequest], Queue]] = {
    "inline": lambda request: InlineQueue.from_url("inline://"),
}


class TestQueueConformance(QueueConformance):
    @pytest.fixture(params=list(QUEUES))
    def queue(self, request: pytest.FixtureRequest) -> Iterator[Queue]:
        queue = QUEUES[request.param](request)
        yield queue
        queue.close()
