"""``spec.suspend`` and queue admission in the operator's reconcile.

Suspending: the running job is asked to stop (Ray Job API: ``stop_job``,
SIGTERM to the driver, which checkpoints at its next step boundary;
RayJob: the RayJob is deleted, KubeRay deletes its cluster and the trainer
checkpoints on SIGTERM). Until the job has ended the pipeline is
``Suspending``; then ``Suspended`` at that phase and epoch, and the runner
starts no job. A stopped job is listed in ``status.suspension.stoppedJobs``:
resuming submits the next attempt of it, which resumes from its checkpoint,
and it does not count against ``spec.runtime.maxAttempts``.

A RayJob that Kueue has not admitted (still suspended by it) holds the
pipeline in ``WaitingForAdmission``. Held time (Suspended, waiting for
admission) is not counted against the budget (``lifecycle.hold``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trainpipe_operator.lifecycle import hold
from trainpipe_operator.pipeline import machine
from trainpipe_operator.pipeline.launchers import JobPending
from trainpipe_operator.pipeline.runner import LocalRunner, PipelineSuspended
from trainpipe_operator.spec.lifecycle_status import SuspensionStatus
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.spec.status import PipelineStatus

# Fields a running pipeline takes from the live resource, not from the spec
# pinned when it started: changing them is not a change of what it runs.
LIVE_FIELDS = ("suspend", "ttl_seconds_after_finished")

Note = tuple[str, str, str]  # an Event: type, reason, message


def pinned_part(spec: PipelineSpec) -> PipelineSpec:
    """The spec without its live fields (what the pinned spec is compared on)."""
    defaults = {name: PipelineSpec.model_fields[name].default for name in LIVE_FIELDS}
    return spec.model_copy(update=defaults)


def holding(spec: PipelineSpec, status: PipelineStatus) -> bool:
    """Whether this reconcile suspends: ``spec.suspend``, or a suspension
    still stopping its job (resuming waits until the job has stopped: two
    attempts never write one run directory at once)."""
    if status.phase in machine.TERMINAL:
        return False
    return spec.suspend or (status.suspension is not None and status.suspension.state == "Suspending")


def suspend(status: PipelineStatus, runner: LocalRunner, launcher: Any, now: datetime) -> list[Note]:
    """One reconcile of a suspended pipeline: stop its running job once,
    collect it when it has stopped, and hold before any new job."""
    notes: list[Note] = []
    job = status.job
    current = status.suspension.state if status.suspension else None
    if job.state != "RUNNING" or not job.submission_id:
        if current != "Suspended":
            hold.enter(status, "Suspended", now).phase = status.phase
            notes.append(("Normal", "Suspended", f"suspended in {status.phase} (spec.suspend); no job starts"))
        status.message = _suspended_message(status)
        return notes
    held: SuspensionStatus | None = status.suspension
    if current not in ("Suspending", "Suspended") or held is None or held.job != job.submission_id:
        held = hold.enter(status, "Suspending", now)
        held.job, held.phase = job.submission_id, status.phase
        if job.submission_id not in held.stopped_jobs:
            held.stopped_jobs.append(job.submission_id)
        stop = getattr(launcher, "stop", None)
        if stop is not None:
            stop(job.submission_id)
        notes.append(("Normal", "Suspending", f"spec.suspend: asked job {job.submission_id} to stop at its next "
                                              "checkpoint"))
    runner.suspended = True
    try:
        runner.advance(status)
    except JobPending as pending:
        status.message = (f"suspending in {held.phase if held else status.phase}: waiting for job {pending.submission_id} ({pending.state}) "
                          "to checkpoint and stop")
        return notes
    except PipelineSuspended as stopped:
        held = hold.enter(status, "Suspended", now)
        held.phase = status.phase
        held.epoch = hold.stopped_epoch(stopped.out)
        status.message = _suspended_message(status)
        if current != "Suspended":  # once, not on every reconcile of the held pipeline
            notes.append(("Normal", "Suspended", status.message))
        return notes
    # The job finished before the stop reached it, and the pipeline ended or waits for approval.
    if status.phase not in machine.TERMINAL:
        hold.enter(status, "Suspended", now).phase = status.phase
        status.message = _suspended_message(status)
    return notes


def resume(status: PipelineStatus, now: datetime) -> list[Note]:
    """``spec.suspend`` false again: the hold ends (its time is not budget)."""
    held = status.suspension
    if held is None or held.state != "Suspended":
        return []
    where, epoch = held.phase, held.epoch
    hold.leave(status, now)
    if not status.started_at and status.suspension is not None:
        status.suspension.held_seconds = 0.0  # created suspended: the budget starts with the pipeline
    at = f" from epoch {epoch}" if epoch is not None else ""
    return [("Normal", "Resumed", f"spec.suspend is false: resuming {where}{at}")]


def note_pending(status: PipelineStatus, pending: JobPending, now: datetime) -> None:
    """A job still pending: waiting for its queue's admission, or running."""
    if pending.state == hold.WAITING:
        waiting = hold.enter(status, "WaitingForAdmission", now)
        waiting.job = pending.submission_id
        status.message = (f"{status.phase}: job {pending.submission_id} waits for admission by its Kueue queue "
                          "(the time waiting is not counted against the budget)")
    elif admitted(status, now):
        status.message = f"{status.phase}: job {pending.submission_id} admitted by its Kueue queue ({pending.state})"


def admitted(status: PipelineStatus, now: datetime) -> bool:
    """End a wait for admission; whether there was one."""
    if status.suspension is not None and status.suspension.state == hold.WAITING:
        hold.leave(status, now)
        return True
    return False


def _suspended_message(status: PipelineStatus) -> str:
    held = status.suspension
    phase = held.phase if held and held.phase else status.phase
    epoch = f" at epoch {held.epoch}" if held and held.epoch is not None else ""
    return (f"Suspended in {phase}{epoch} (spec.suspend: true): no job runs; set spec.suspend to false "
            "(trainpipe resume) to continue from the checkpoint")
