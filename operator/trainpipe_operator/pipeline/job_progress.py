"""``status.progress``: where the running job stands (its heartbeat) and how
long the pipeline may still take.

How the ETA is estimated (an upper bound, on purpose):
- the job: the epochs it has left (a partial epoch counted by its steps)
  times its measured seconds per epoch (the last epoch's time, validation
  included; before the first epoch ends, its mean step time times the steps
  per epoch);
- the pipeline: the job's ETA plus the epochs budgeted for the phases after
  it (the reproducibility rerun, every optimization iteration left at the
  baseline's epochs, the final training), at the same seconds per epoch,
  and never more than the budget left plus the final training (a spent
  budget goes to Finalization). Optimization may end early (the target met,
  diminishing returns), so the figure falls in steps when it does.

The progress changes at a bounded rate: at most every ``INTERVAL_SECONDS``
(or when the job changes), so the status is not written per step; an
unchanged heartbeat changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone

from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.spec.status import PipelineStatus, ProgressStatus
from trainpipe_trainer.contract.heartbeat import Heartbeat

INTERVAL_SECONDS = 10.0


def epoch_seconds(beat: Heartbeat) -> float | None:
    if beat.epoch_seconds:
        return beat.epoch_seconds
    if beat.step_seconds:
        return beat.step_seconds * beat.steps_per_epoch
    return None


def job_eta(beat: Heartbeat) -> float | None:
    """Seconds the job still needs; 0 once it finished; None before it measured a step."""
    if beat.state == "finished":
        return 0.0
    per_epoch = epoch_seconds(beat)
    if per_epoch is None:
        return None
    left = beat.epochs - beat.completed_epochs - min(beat.step_in_epoch / beat.steps_per_epoch, 1.0)
    return max(left, 0.0) * per_epoch


def epochs_after(spec: PipelineSpec, phase: str, iteration: int, rerun: bool = False) -> tuple[int, int]:
    """Training epochs budgeted after the current job: (before Finalization,
    Finalization's own). ``iteration``: optimization iterations done
    (status.iteration); ``rerun``: the job is the baseline's reproducibility rerun."""
    baseline, final = spec.baseline.epochs, spec.finalization.epochs
    repro = baseline if spec.gates.reproducibility else 0
    optimization = spec.optimization.max_iterations * baseline
    if phase in ("Pending", "Planning"):
        return baseline + repro + optimization, final
    if phase == "Baseline":
        return (0 if rerun else repro) + optimization, final
    if phase in ("Diagnostics", "Optimization"):
        # Optimization's job is iteration status.iteration + 1: the ones after it remain.
        done = iteration + (1 if phase == "Optimization" else 0)
        return max(spec.optimization.max_iterations - done, 0) * baseline, final
    return 0, 0


def build(beat: Heartbeat, phase: str, spec: PipelineSpec, status: PipelineStatus, now: float,
          rerun: bool = False) -> ProgressStatus:
    job = job_eta(beat)
    pipeline = None
    per_epoch = epoch_seconds(beat)
    if job is not None and per_epoch is not None:
        before_final, final = epochs_after(spec, phase, status.iteration, rerun)
        pipeline = job + (before_final + final) * per_epoch
        budget_left = _budget_left(spec, status, now)
        if budget_left is not None and phase != "Finalization":
            pipeline = min(pipeline, max(budget_left, 0.0) + final * per_epoch)
    return ProgressStatus(
        phase=phase, summary=f"{phase} {beat.completed_epochs}/{beat.epochs}",
        epoch=beat.completed_epochs, epochs=beat.epochs, step=beat.global_step,
        samples_per_second=round(beat.samples_per_second, 1) if beat.samples_per_second is not None else None,
        job_eta_seconds=round(job) if job is not None else None,
        pipeline_eta_seconds=round(pipeline) if pipeline is not None else None,
        eta=duration(pipeline) if pipeline is not None else None,
        heartbeat_at=_iso(beat.time), updated_at=_iso(now),
    )


def due(previous: ProgressStatus | None, beat: Heartbeat, phase: str, now: float,
        interval: float = INTERVAL_SECONDS) -> bool:
    """Whether the status's progress should be read again from ``beat``."""
    if previous is None or previous.phase != phase:
        return True
    if previous.heartbeat_at == _iso(beat.time):
        return False  # nothing moved
    if beat.state == "finished":
        return True
    return now - _parse(previous.updated_at) >= interval


def duration(seconds: float) -> str:
    """``1h5m``, ``12m30s``, ``45s``: the ETA column."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s" if minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def _budget_left(spec: PipelineSpec, status: PipelineStatus, now: float) -> float | None:
    if not status.started_at:
        return None
    return spec.budget.seconds - (now - _parse(status.started_at))


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> float:
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
