"""The hang watchdog and status.progress, as pure logic on real files: the
stall timeout's range, when an attempt counts as hung (and when it is not
watched yet), that a stall is declared once and stops the job, the ETA
estimate, the bounded rate of progress updates, and what the operator makes
of them (an Event, the stalls counter, the progress gauges)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from trainpipe_operator.commands.cluster_status import progress_lines
from trainpipe_operator.controller.metrics import OperatorMetrics
from trainpipe_operator.controller.watchdog import watchdog_events
from trainpipe_operator.pipeline import job_progress
from trainpipe_operator.pipeline.watchdog import JobWatch, Stall, effective_timeout, silent_seconds
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.spec.status import JobStatus, PipelineStatus
from trainpipe_trainer.contract.heartbeat import HEARTBEAT_FILE, Heartbeat

SPEC = {"data": {"source": "builtin:digits"}, "target": {"metric": "val_acc", "value": 0.9}}


def beat(time: float, started: float = 100.0, **kw: object) -> Heartbeat:
    base = {"state": "training", "time": time, "started_at": started, "global_step": 120, "completed_epochs": 3,
            "epochs": 10, "step_in_epoch": 20, "steps_per_epoch": 40, "step_seconds": 0.5, "epoch_seconds": 25.0,
            "samples_per_second": 512.0}
    return Heartbeat.model_validate({**base, **kw})


@pytest.mark.parametrize(("field", "default", "given", "bad"), [
    ("stallTimeout", 300, ("90s", 90), ("2s", "2d")),
    ("startTimeout", 1800, ("10m", 600), ("4s", "25h")),
])
def test_watchdog_timeouts_default_to_minutes_and_their_range_is_stated(
        field: str, default: float, given: tuple[str, float], bad: tuple[str, str]) -> None:
    def seconds(spec: PipelineSpec) -> float:
        return spec.gates.stall_seconds if field == "stallTimeout" else spec.gates.start_seconds

    assert seconds(PipelineSpec.model_validate(SPEC)) == default
    assert seconds(PipelineSpec.model_validate({**SPEC, "gates": {field: given[0]}})) == given[1]
    for value in bad:
        with pytest.raises(ValidationError, match=f"allowed range 5s to 24h for spec.gates.{field}"):
            PipelineSpec.model_validate({**SPEC, "gates": {field: value}})


def test_an_attempt_is_watched_from_its_own_first_heartbeat() -> None:
    assert silent_seconds(None, attempt_started=200, now=900) is None  # not training yet
    assert silent_seconds(beat(150, started=100), attempt_started=200, now=900) is None  # the attempt before's
    assert silent_seconds(beat(250, started=210), attempt_started=200, now=900) == 650
    assert silent_seconds(beat(250, started=210, state="finished"), attempt_started=200, now=900) is None
    # Never under ten measured steps: slow steps are not a hang.
    assert effective_timeout(30, beat(0, step_seconds=12.0)) == 120
    assert effective_timeout(30, beat(0, step_seconds=0.5)) == 30


def _watch(out: Path, clock: list[float], stops: list[str], stalls: list[Stall], beats: list[Heartbeat]) -> JobWatch:
    return JobWatch(out, "Baseline", "p-1-02-baseline-train-a1", timeout=10, on_beat=beats.append,
                    stop=stops.append, on_stall=stalls.append, clock=lambda: clock[0])


def test_a_silent_heartbeat_is_declared_hung_once_and_the_job_stopped(tmp_path: Path) -> None:
    clock, stops, stalls, beats = [1000.0], [], [], []  # type: ignore[var-annotated]
    watch = _watch(tmp_path, clock, stops, stalls, beats)
    clock[0] = 1500.0
    assert watch.check() is None and not stops  # no heartbeat of this attempt: not watched
    beat(1502.0, started=1001.0).write(tmp_path / HEARTBEAT_FILE)
    clock[0] = 1510.0
    assert watch.check() is None and len(beats) == 1  # 8 s of silence < 10 s
    clock[0] = 1513.0
    stall = watch.check()
    assert stall is not None and stops == ["p-1-02-baseline-train-a1"] and stalls == [stall]
    assert "no heartbeat for 11 s after step 120 (epoch 3 done)" in stall.message
    clock[0] = 1600.0
    assert watch.check() is None and len(stops) == 1  # declared once
    # A replay (the next tick, a restarted operator) sees the same attempt the same way.
    again = _watch(tmp_path, clock, stops, stalls, beats)
    assert again.started == 1000.0 and again.stalled is not None
    assert again.stalled["globalStep"] == 120 and again.check() is None


def _start_watch(out: Path, clock: list[float], stops: list[str], stalls: list[Stall], blocking: bool) -> JobWatch:
    return JobWatch(out, "Baseline", "p-1-02-baseline-train-a2", timeout=10, on_beat=lambda _: None,
                    stop=stops.append, on_stall=stalls.append, clock=lambda: clock[0], start_timeout=60,
                    blocking=blocking)


def test_a_job_running_without_a_first_heartbeat_is_hung_after_start_timeout(tmp_path: Path) -> None:
    clock, stops, stalls = [1000.0], [], []  # type: ignore[var-annotated]
    watch = _start_watch(tmp_path, clock, stops, stalls, blocking=False)
    # The attempt before's heartbeat is no sign of this one starting.
    beat(900.0, started=800.0).write(tmp_path / HEARTBEAT_FILE)
    clock[0] = 1500.0
    assert watch.check("PENDING") is None  # queued, waiting for a node: not counted
    assert watch.check("RUNNING") is None  # running from now
    clock[0] = 1560.0
    assert watch.check("RUNNING") is None and not stops  # 60 s: not over
    clock[0] = 1561.0
    stall = watch.check("RUNNING")
    assert stall is not None and stops == ["p-1-02-baseline-train-a2"] and stalls == [stall]
    assert stall.global_step is None and stall.timeout == 60
    assert "running for 61 s without beginning to train" in stall.message
    assert "spec.gates.startTimeout (60 s)" in stall.message
    # A replay sees it stalled, and when it ran from.
    again = _start_watch(tmp_path, clock, stops, stalls, blocking=False)
    assert again.stalled is not None and again.stalled["timeoutField"] == "startTimeout"
    assert again.check("RUNNING") is None and len(stops) == 1


def test_a_first_heartbeat_in_time_ends_the_start_watch(tmp_path: Path) -> None:
    clock, stops, stalls = [1000.0], [], []  # type: ignore[var-annotated]
    watch = _start_watch(tmp_path, clock, stops, stalls, blocking=False)
    assert watch.check("RUNNING") is None
    beat(1050.0, started=1040.0, state="started").write(tmp_path / HEARTBEAT_FILE)
    clock[0] = 1055.0
    assert watch.check("RUNNING") is None
    clock[0] = 1070.0  # past the start timeout, 20 s since the heartbeat: the stall timeout applies
    stall = watch.check("RUNNING")
    assert stall is not None and stall.timeout_field == "stallTimeout" and stall.global_step == 120


def test_a_blocking_launcher_job_counts_as_running_from_its_submission(tmp_path: Path) -> None:
    clock, stops, stalls = [1000.0], [], []  # type: ignore[var-annotated]
    watch = _start_watch(tmp_path, clock, stops, stalls, blocking=True)
    clock[0] = 1059.0
    assert watch.check() is None
    clock[0] = 1061.0
    stall = watch.check()
    assert stall is not None and stall.timeout_field == "startTimeout" and stops == ["p-1-02-baseline-train-a2"]


def test_the_eta_counts_the_job_and_the_epochs_budgeted_after_it() -> None:
    spec = PipelineSpec.model_validate({**SPEC, "baseline": {"epochs": 10}, "finalization": {"epochs": 30},
                                        "optimization": {"maxIterations": 2}, "budget": {"maxDuration": "12h"}})
    b = beat(1000.0)  # epoch 3 of 10 done, 20 of 40 steps into the 4th, 25 s an epoch
    assert job_progress.job_eta(b) == pytest.approx(6.5 * 25)
    status = PipelineStatus(phase="Baseline", started_at="1970-01-01T00:00:00+00:00")
    progress = job_progress.build(b, "Baseline", spec, status, now=1000.0)
    # this job, then 2 optimization iterations of 10 epochs and the final 30
    assert progress.pipeline_eta_seconds == round(6.5 * 25 + (20 + 30) * 25)
    assert progress.summary == "Baseline 3/10" and progress.eta == "23m" and progress.step == 120
    assert job_progress.epochs_after(spec, "Optimization", iteration=1) == (0, 30)  # the last iteration runs
    # The budget caps it: a spent budget goes to Finalization.
    tight = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_duration": "20m"})})
    capped = job_progress.build(b, "Baseline", tight, status, now=1000.0)
    assert capped.pipeline_eta_seconds == round((1200 - 1000) + 30 * 25)


def test_progress_changes_at_a_bounded_rate() -> None:
    spec = PipelineSpec.model_validate(SPEC)
    status = PipelineStatus(phase="Baseline")
    first = job_progress.build(beat(1000.0), "Baseline", spec, status, now=1000.0)
    assert job_progress.due(None, beat(1000.0), "Baseline", 1000.0)
    assert not job_progress.due(first, beat(1002.0), "Baseline", 1003.0)  # within the interval
    assert not job_progress.due(first, beat(1000.0), "Baseline", 1100.0)  # the heartbeat did not move
    assert job_progress.due(first, beat(1011.0), "Baseline", 1011.0)
    assert job_progress.due(first, beat(1002.0), "Optimization", 1002.0)  # another job


def test_the_operator_posts_a_stalled_event_counts_it_and_exports_progress(tmp_path: Path) -> None:
    metrics = OperatorMetrics()
    spec = PipelineSpec.model_validate(SPEC)
    status = PipelineStatus(phase="Baseline", job=JobStatus(submission_id="s", phase="Baseline", state="RUNNING"))
    status.progress = job_progress.build(beat(1000.0), "Baseline", spec, status, now=1000.0)
    stall = Stall("p-a1", "Baseline", "02_baseline", 301.0, 300.0, 120, 3, "t")
    runner = SimpleNamespace(stalls=[stall], runtime="ray")
    events = watchdog_events(runner, status, metrics, "ml/p")  # type: ignore[arg-type]
    assert [(e.type, e.reason) for e in events] == [("Warning", "Stalled")]
    assert "no heartbeat for 301 s" in events[0].message
    value = metrics.registry.get_sample_value
    assert value("trainpipe_operator_job_stalls_total", {"runtime": "ray"}) == 1
    assert value("trainpipe_operator_pipeline_epoch", {"namespace": "ml", "pipeline": "p", "phase": "Baseline"}) == 3
    assert value("trainpipe_operator_pipeline_eta_seconds", {"namespace": "ml", "pipeline": "p"}) == \
        status.progress.pipeline_eta_seconds
    status.job.state = "SUCCEEDED"
    watchdog_events(SimpleNamespace(stalls=[], runtime="ray"), status, metrics, "ml/p")  # type: ignore[arg-type]
    assert value("trainpipe_operator_pipeline_eta_seconds", {"namespace": "ml", "pipeline": "p"}) is None


def test_trainpipe_status_prints_progress_and_a_stalled_attempt() -> None:
    spec = PipelineSpec.model_validate(SPEC)
    status = PipelineStatus(phase="Baseline", job=JobStatus(
        submission_id="p-a2", phase="Baseline", state="RUNNING", attempt=2, reason="Stalled",
        message="attempt 1: Baseline job p-a1 stalled"))
    status.progress = job_progress.build(beat(1000.0), "Baseline", spec, status, now=1000.0)
    lines = progress_lines(status)
    assert lines[0].startswith("progress: Baseline 3/10, step 120, 512.0 samples/s, job ETA 2m42s, pipeline ETA ")
    assert lines[1] == "job: p-a2 RUNNING attempt 2 (Stalled: attempt 1: Baseline job p-a1 stalled)"


def test_the_status_patch_deletes_what_the_new_status_no_longer_has() -> None:
    from trainpipe_operator.controller.status_patch import merge_patch

    old = {"phase": "Baseline", "progress": {"summary": "Baseline 1/4"},
           "job": {"submissionId": "a1", "reason": "Stalled", "attempt": 1}}
    new = {"phase": "Succeeded", "job": {"submissionId": "f1", "attempt": 1}}
    patch = merge_patch(old, new)
    assert patch == {"phase": "Succeeded", "progress": None, "job": {"submissionId": "f1", "reason": None}}
    assert _applied(old, patch) == new  # RFC 7386, as the API server applies it


def _applied(target: dict, patch: dict) -> dict:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _applied(out[key], value)
        else:
            out[key] = value
    return out
