"""What the operator makes of the runner's progress and watchdog
(``pipeline/watchdog.py``, ``pipeline/job_progress.py``): a Warning Event
``Stalled`` and ``trainpipe_operator_job_stalls_total`` per hung job, and the
progress gauges the dashboard shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainpipe_operator.controller.metrics import MetricsSink
from trainpipe_operator.spec.status import PipelineStatus

if TYPE_CHECKING:
    from trainpipe_operator.controller.reconcile import Event
    from trainpipe_operator.pipeline.runner import LocalRunner


def watchdog_events(runner: LocalRunner, status: PipelineStatus, metrics: MetricsSink, key: str) -> list[Event]:
    from trainpipe_operator.controller.reconcile import Event

    events = []
    for stall in runner.stalls:
        metrics.stalled(runner.runtime)
        events.append(Event("Warning", "Stalled", stall.message[:1000]))
    progress = status.progress
    if progress is None or status.job.state != "RUNNING":
        metrics.set_progress(key, None)
    else:
        metrics.set_progress(key, progress.phase, progress.epoch, progress.epochs, progress.pipeline_eta_seconds)
    return events
