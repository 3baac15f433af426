"""The server's view of the workers and queues behind its queue URL (see
statesaga.observability.fleet), and the one repair it offers there."""

from __future__ import annotations

import logging

from ..observability.fleet import Fleet, Inspectable, RequeueRefused, fleet_of_queue
from .actions import Operations
from .timeline import STUCK_AFTER

log = logging.getLogger("statesaga.web")


def fleet_of(ops: Operations) -> Fleet:
    engine = ops.engine()
    return fleet_of_queue(engine.queue, store=engine.store, stuck_after=STUCK_AFTER)


def requeue(ops: Operations, job_id: str, by: str) -> None:
    """Requeue a failed statesaga job (the queue refuses any other)."""
    queue = ops.engine().queue
    if not isinstance(queue, Inspectable):
        raise RequeueRefused(
            f"the queue {ops.settings.queue.split(':', 1)[0]}:// has no failed jobs to requeue"
        )
    queue.requeue_failed(job_id)
    log.info("%s requeued the failed job %s", by, job_id)
