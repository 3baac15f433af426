"""What an operator sees of an RQ queue (statesaga.observability.fleet): its live workers, what
each runs, the queue's depth, delayed, running, failed and quarantined jobs, the scheduler's
holder; and the one repair that is safe from a page, requeueing a failed statesaga job.

Everything is read as JSON (RQ's JSONSerializer, statesaga's job class): nothing read back from
Redis is unpickled, and a job that is not statesaga's is shown, never run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from statesaga.observability.fleet import (
    FailedJob,
    Fleet,
    QueueInfo,
    RequeueRefused,
    WorkerInfo,
)
from statesaga.ports import Job
from statesaga.security.redact import redact

if TYPE_CHECKING:
    import rq


def _aware(at: datetime | None) -> datetime | None:
    # RQ keeps naive UTC times.
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _payload(job: Any) -> Job | None:
    """The statesaga job an RQ job carries, or None for any other job."""
    from statesaga.adapters.queues.rq.jobguard import refusal

    if refusal(job) is not None:
        return None
    return Job.from_dict(job.args[0])


def _fetch(queue: rq.Queue, ids: list[str]) -> list[Any]:
    from rq.serializers import JSONSerializer
    from statesaga.adapters.queues.rq.jobguard import StatesagaJob

    if not ids:
        return []
    jobs: list[Any] = StatesagaJob.fetch_many(
        ids, connection=queue.connection, serializer=JSONSerializer
    )
    return jobs


def _worker(w: Any, queue: rq.Queue) -> WorkerInfo:
    job_id = w.get_current_job_id()
    job = None
    if job_id:
        try:
            found = _fetch(queue, [job_id])
            job = _payload(found[0]) if found and found[0] is not None else None
        except Exception:  # an unreadable job: the worker is shown without it
            job = None
    name = w.name if isinstance(w.name, str) else w.name.decode()
    return WorkerInfo(
        name=name,
        host=w.hostname or "",
        pid=w.pid,
        state=str(w.get_state()),
        queues=tuple(w.queue_names()),
        last_beat=_aware(w.last_heartbeat),
        started_at=_aware(w.birth_date),
        workflow_id=job.workflow_id if job else None,
        step=job.step if job else None,
        kind=job.kind if job else None,
        attempt=job.attempt if job else None,
        job_id=job_id,
    )


def _reason(job: Any) -> str:
    text = ""
    try:
        latest = job.latest_result()
        text = (latest.exc_string or "") if latest is not None else ""
    except Exception:
        text = ""
    text = text or (getattr(job, "exc_info", None) or "")
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return redact(lines[-1].strip())[:300] if lines else ""


def _failed(queue: rq.Queue, limit: int) -> list[FailedJob]:
    registry = queue.failed_job_registry
    ids: list[str] = registry.get_job_ids(0, limit - 1) if limit > 0 else []
    out = []
    for job_id, job in zip(ids, _fetch(queue, ids), strict=True):
        if job is None:
            out.append(FailedJob(job_id, queue.name, None, "the job's data has expired"))
            continue
        try:
            payload = _payload(job)
        except Exception:
            payload = None
        out.append(
            FailedJob(
                id=job_id,
                queue=queue.name,
                failed_at=_aware(job.ended_at),
                reason=_reason(job),
                workflow_id=payload.workflow_id if payload else None,
                step=payload.step if payload else None,
                kind=payload.kind if payload else None,
                attempt=payload.attempt if payload else None,
                requeueable=payload is not None,
            )
        )
    return out


def inspect(queue: rq.Queue, failed_limit: int = 50) -> Fleet:
    from rq import Worker
    from rq.scheduler import RQScheduler
    from statesaga.adapters.queues.rq.jobguard import quarantine_key

    conn = queue.connection
    workers = [_worker(w, queue) for w in Worker.all(queue=queue)]
    workers.sort(key=lambda w: w.name)
    holder = conn.get(RQScheduler.get_locking_key(queue.name))
    info = QueueInfo(
        name=queue.name,
        depth=int(queue.count),
        delayed=int(queue.scheduled_job_registry.count),
        running=int(queue.started_job_registry.count),
        failed=int(queue.failed_job_registry.count),
        quarantined=int(conn.llen(quarantine_key(queue))),  # type: ignore[arg-type]
        scheduler=holder.decode() if isinstance(holder, bytes) else holder,
    )
    return Fleet("rq", tuple(workers), (info,), tuple(_failed(queue, failed_limit)))


def requeue_failed(queue: rq.Queue, job_id: str) -> None:
    """Put a failed statesaga job back on its queue. Safe: the job claims its step with its
    attempt, so a step that has moved on since ignores it as stale."""
    registry = queue.failed_job_registry
    if job_id not in registry.get_job_ids():
        raise RequeueRefused(f"no failed job {job_id!r} on the queue {queue.name!r}")
    found = _fetch(queue, [job_id])
    job = found[0] if found else None
    if job is None:
        raise RequeueRefused(f"the failed job {job_id!r} has expired")
    from statesaga.adapters.queues.rq.jobguard import refusal

    why = refusal(job)
    if why is not None:
        raise RequeueRefused(f"the job {job_id!r} is not a statesaga job ({why}): not requeued")
    registry.requeue(job_id)


__all__ = ["inspect", "requeue_failed"]
