"""The status of a pipeline's pauses (``spec.suspend``, a Kueue queue's
admission) and of its cleanup (``spec.ttlSecondsAfterFinished``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainpipe_operator.spec.base import CamelModel

PauseState = Literal["Suspending", "Suspended", "WaitingForAdmission"]


class SuspensionStatus(CamelModel):
    """Where a suspended (or queued) pipeline stopped, and how long it has
    been held: held time is not counted against ``spec.budget``."""

    state: PauseState | None = Field(
        default=None, description=("Suspending (the running job was asked to stop and checkpoint), Suspended "
                                   "(no job runs), WaitingForAdmission (a RayJob waits for its Kueue queue); "
                                   "absent while the pipeline runs"))
    since: str | None = Field(default=None, description="when the current hold began")
    phase: str | None = Field(default=None, description="the phase the pipeline was suspended in (it resumes there)")
    epoch: int | None = Field(default=None, description="the last epoch the stopped job completed and checkpointed")
    job: str | None = Field(default=None, description="the job that was stopped for the suspension")
    held_seconds: float = Field(
        default=0.0, description="seconds held in earlier suspensions and admission waits (not counted as budget)")
    stopped_jobs: list[str] = Field(
        default_factory=list, description="jobs stopped for a suspension: not counted as failed attempts")


class CleanupStatus(CamelModel):
    """What ``spec.ttlSecondsAfterFinished`` removed, and when."""

    due_at: str | None = Field(default=None, description="when the finished pipeline's jobs are removed")
    done_at: str | None = Field(default=None, description="when they were removed")
    removed: list[str] = Field(default_factory=list, description="what was removed (RayJobs, Ray job submissions)")
    message: str = Field(default="", description="what went wrong, if anything (retried)")
