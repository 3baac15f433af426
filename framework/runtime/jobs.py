"""The job protocol: a worker claims a job, calls its handler, and settles the outcome.

Three kinds of job move a saga on: a step's attempt, its compensation, and the timer of a
waiting step. Each is claimed by a transaction that checks the job's attempt token against
the stored step (a stale or duplicate job changes nothing), and a step's or compensation's
outcome is settled by a second one. Which states a claim accepts is asked of the step
lifecycle (the sources of `dispatch`, of `wake`/`wait_timeout`, of `compensated`), not
listed here. With eager dispatch the settle of a step also claims the next ready step (or,
where a lost attempt could halt the saga, holds it for its own claim right before the call),
which this process then runs at once. The builders of the jobs the effects enqueue live here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import NotFoundError
from ..models import SagaStep, StepStatus, WorkflowState, WorkflowStatus
from ..ports import Job
from ..vocabulary import STEP_GAVE_UP, StepTrigger, sources
from .guards import doubt_is_harmless
from .handlers import Progress, call
from .transaction import Kernel, Txn

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("statesaga.engine")

#: The history's word for a step claimed in the save that settled the step before it.
CLAIMED = "claimed by the worker that ran the last step"
#: ... and for one held by that worker and claimed by its own save right before its call.
HELD = "held by the worker that ran the last step, claimed right before its call"


def step_job(wf: WorkflowState, step: SagaStep) -> Job:
    """The job of the step's next attempt; its token is that attempt's number."""
    return Job(
        kind="step",
        workflow_id=wf.id,
        step=step.name,
        attempt=step.attempts + 1,
        timeout=step.timeout,
        description=f"{wf.name} {wf.id} step {step.name} attempt {step.attempts + 1}",
    )


def timer_job(wf: WorkflowState, step: SagaStep) -> Job:
    """The job that fires a WAITING step's due time; its token is the wait's attempt."""
    what = "wake" if step.kind == "sleep" else "timeout"
    return Job(
        kind="timer",
        workflow_id=wf.id,
        step=step.name,
        attempt=step.attempts,
        description=f"{wf.name} {wf.id} {what} {step.name} attempt {step.attempts}",
    )


def compensation_job(wf: WorkflowState, step: SagaStep) -> Job:
    """The job of the step's next compensation attempt."""
    assert step.compensation is not None
    attempt = step.compensation.attempts + 1
    return Job(
        kind="compensation",
        workflow_id=wf.id,
        step=step.name,
        attempt=attempt,
        timeout=None,
        description=f"{wf.name} {wf.id} undo {step.name} attempt {attempt}",
    )


class Jobs:
    """Claims, runs and settles a runtime's jobs through its kernel. `progress` is what a
    handler's `ctx.progress` calls (the progress command)."""

    def __init__(self, runtime: Runtime, kernel: Kernel, progress: Progress) -> None:
        self.rt = runtime
        self.kernel = kernel
        self.progress = progress
        chart = runtime.step_chart.chart

        def where(*triggers: str) -> frozenset[StepStatus]:
            return frozenset(StepStatus(s) for s in sources(chart, *triggers))

        # Where each kind of job may be claimed or settled, as the step lifecycle says.
        self.dispatchable = where(StepTrigger.DISPATCH)
        self.settleable = where(StepTrigger.SUCCEED, StepTrigger.FAIL)
        self.timed = where(StepTrigger.WAKE, StepTrigger.WAIT_TIMEOUT)
        self.undoable = where(StepTrigger.COMPENSATED, StepTrigger.COMPENSATION_FAILED)

    def run(self, job: Job) -> None:
        """Run one step, compensation or timer job; stale and duplicate jobs are ignored, and
        so is a job for a workflow the store does not hold (a forged job, another store's,
        one whose workflow was removed): it touches nothing, so one WARNING line, not a
        failure with a traceback."""
        try:
            self._run(job)
        except NotFoundError as exc:
            if exc.workflow_id != job.workflow_id:
                raise
            log.warning(
                "%s job for workflow %r ignored: the store holds no such workflow",
                job.kind,
                job.workflow_id,
            )

    def _run(self, job: Job) -> None:
        telemetry = self.rt.telemetry
        if job.kind == "step":
            self.run_step(job)
            return
        with telemetry.job(job):
            if job.kind == "compensation":
                self.run_compensation(job)
            elif job.kind == "timer":
                self.run_timer(job)
            else:
                log.error("unknown job kind %r for %s", job.kind, job.workflow_id)

    # -- steps -----------------------------------------------------------------------------
    def run_step(self, job: Job) -> None:
        rt = self.rt
        with rt.telemetry.job(job):
            claimed = self.claim(job)
            running = None if claimed is None else self.execute(claimed, job)
        # Eager dispatch: each step the last settle claimed (or held) runs here, as its own
        # attempt. A held step is claimed by its own save, right before its handler's call.
        while running is not None:
            settled, following = running
            with rt.telemetry.job(following, claimed=True):
                held = settled.step(following.step).status is not StepStatus.EXECUTING
                mine = self.claim(following, settled, HELD) if held else settled
                running = None if mine is None else self.execute(mine, following)

    def claim(
        self, job: Job, first: WorkflowState | None = None, detail: str | None = None
    ) -> WorkflowState | None:
        """Claim the job's attempt (EXECUTING, the attempt token): the save right before the
        handler's call, so from it on the handler may have been called. None when the job is
        stale or a duplicate. `first`: the document this process just saved (no re-read)."""
        rt = self.rt
        kernel = self.kernel

        def claim(txn: Txn) -> bool:
            step = _step_of(txn.wf, job)
            if step is None:
                return False
            if (
                txn.wf.status is not WorkflowStatus.RUNNING
                or step.status not in self.dispatchable
                or job.attempt != step.attempts + 1
            ):
                log.info(
                    "stale job %s ignored (%s is %s, attempt %s)",
                    _jobname(job),
                    step.name,
                    step.status.value,
                    step.attempts,
                )
                return False
            kernel.fire(txn, step, StepTrigger.DISPATCH, detail)
            return True

        return kernel.transact(job.workflow_id, claim, by=rt.worker, job=job, first=first)

    def execute(self, claimed: WorkflowState, job: Job) -> tuple[WorkflowState, Job] | None:
        """Run a claimed attempt and settle its outcome on the document the claim saved (no
        second read; a lost revision check re-reads). Returns the next step when the settle
        claimed or held it (eager dispatch), for this process to run at once."""
        rt = self.rt
        kernel = self.kernel
        step = claimed.step(job.step)
        if rt.probe is not None:
            rt.probe("before_action", job)
        outcome, value = call(rt, claimed, step, job, self.progress, compensating=False)
        if rt.probe is not None:
            rt.probe("after_action", job)
        following: Job | None = None

        def settle(txn: Txn) -> bool:
            nonlocal following
            following = None
            s = txn.wf.step(job.step)
            if s.status not in self.settleable or s.attempts != job.attempt:
                log.info(
                    "late result of %s ignored (step is %s, attempt %s)",
                    _jobname(job),
                    s.status.value,
                    s.attempts,
                )
                return False
            now = rt.clock.now()
            if outcome == "ok":
                s.result = value
                s.error = None
                s.in_doubt = False  # this attempt, with the same key, says what is in force
                s.completed_at = now
                txn.wf.results[s.name] = value
                kernel.fire(txn, s, StepTrigger.SUCCEED)
            else:
                s.error = value
                trigger = StepTrigger.TIME_OUT if outcome == "timeout" else StepTrigger.FAIL
                kernel.fire(txn, s, trigger, value.message)
                if StepStatus(s.status) in STEP_GAVE_UP and txn.wf.error is None:
                    txn.wf.error = s.error
            if rt.eager:
                kernel.followups(txn)
                following = self.claim_eagerly(txn)
            return True

        settled = kernel.transact(job.workflow_id, settle, by=rt.worker, job=job, first=claimed)
        if settled is None or following is None:
            return None
        following = rt.telemetry.stamp(following, 0.0, settled)  # its trace, as if queued
        rt.queue.renew(following)  # e.g. RQ: the next step's own job timeout
        return settled, following

    def claim_eagerly(self, txn: Txn) -> Job | None:
        """Take the first step this transaction would enqueue off the list: the process that
        saves runs it (Temporal's eager activity execution). The other ready steps still go
        to the queue for other workers.

        Claimed is not started: a step whose lost attempt costs at most a retry (the saga can
        still undo it, or it has no effect) is claimed in this very save, which is then all
        the engine knows of its call. A step at or past the pivot (or under forward_retry),
        whose doubt would halt the saga, is held QUEUED and claimed by its own save right
        before the call (one more write), so a process dying in between leaves it QUEUED:
        recovery runs it again with the attempt unspent, or the saga unwinds past it."""
        if txn.wf.status is not WorkflowStatus.RUNNING:
            return None
        for i, (queued, delay) in enumerate(txn.jobs):
            if queued.kind == "step" and delay == 0:
                step = txn.wf.step(queued.step)
                # Only a step queued by this very event (a retry waits for its backoff).
                if step.status is not StepStatus.QUEUED or queued.attempt != step.attempts + 1:
                    continue
                if doubt_is_harmless(txn.wf, step):
                    self.kernel.fire(txn, step, StepTrigger.DISPATCH, CLAIMED)
                del txn.jobs[i]
                txn.claimed = queued
                return queued
        return None

    # -- timers ----------------------------------------------------------------------------
    def run_timer(self, job: Job) -> None:
        """A WAITING step's due time: a sleep wakes, a wait times out. A timer that fires
        before the persisted due time (a clock running ahead, an early scheduler) puts itself
        back for the time left."""
        rt = self.rt
        kernel = self.kernel

        def fire(txn: Txn) -> bool:
            step = _step_of(txn.wf, job)
            if step is None:
                return False
            due = step.next_attempt_at
            if (
                txn.wf.status is not WorkflowStatus.RUNNING
                or step.status not in self.timed
                or job.attempt != step.attempts
                or due is None
            ):
                log.info(
                    "stale timer %s ignored (%s is %s)", _jobname(job), step.name, step.status.value
                )
                return False
            if rt.clock.now() < due:
                kernel.fire(txn, step, StepTrigger.REQUEUE, "the timer fired early")
            elif step.kind == "sleep":
                kernel.fire(txn, step, StepTrigger.WAKE)
            else:
                kernel.fire(
                    txn, step, StepTrigger.WAIT_TIMEOUT, f"no {step.signal!r} signal in time"
                )
            return True

        kernel.transact(job.workflow_id, fire, by=rt.worker, job=job)

    # -- compensations ---------------------------------------------------------------------
    def run_compensation(self, job: Job) -> None:
        rt = self.rt
        kernel = self.kernel

        def claim(txn: Txn) -> bool:
            step = _step_of(txn.wf, job)
            if step is None:
                return False
            comp = step.compensation
            if step.status not in self.undoable or comp is None or job.attempt != comp.attempts + 1:
                log.info("stale compensation job %s ignored", _jobname(job))
                return False
            comp.attempts += 1
            comp.started_at = rt.clock.now()
            txn.persist = True
            return True

        claimed = kernel.transact(job.workflow_id, claim, by=rt.worker, job=job)
        if claimed is None:
            return
        step = claimed.step(job.step)
        if rt.probe is not None:
            rt.probe("before_compensation", job)
        outcome, value = call(rt, claimed, step, job, self.progress, compensating=True)
        if rt.probe is not None:
            rt.probe("after_compensation", job)

        def settle(txn: Txn) -> bool:
            s = txn.wf.step(job.step)
            comp = s.compensation
            if s.status not in self.undoable or comp is None or comp.attempts != job.attempt:
                log.info("late compensation result of %s ignored", _jobname(job))
                return False
            comp.finished_at = rt.clock.now()
            if outcome == "ok":
                comp.result = value
                comp.error = None
                kernel.fire(txn, s, StepTrigger.COMPENSATED)
            else:
                comp.error = value
                kernel.fire(txn, s, StepTrigger.COMPENSATION_FAILED, value.message)
                if StepStatus(s.status) is StepStatus.COMPENSATION_FAILED:
                    txn.wf.reason = (
                        f"compensation of {s.name} failed: {value.type}: {value.message}"
                    )
            return True

        kernel.transact(job.workflow_id, settle, by=rt.worker, job=job, first=claimed)


def _step_of(wf: WorkflowState, job: Job) -> SagaStep | None:
    """The job's step, or None when a plan's revision removed it (its job is stale)."""
    try:
        return wf.step(job.step)
    except KeyError:
        log.info("stale job %s ignored (the plan no longer has that step)", _jobname(job))
        return None


def _jobname(job: Job) -> str:
    return f"{job.kind}:{job.workflow_id}:{job.step}#{job.attempt}"
