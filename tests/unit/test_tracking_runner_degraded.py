"""Tracking never decides a gate and never breaks the pipeline (issue 13):
a tracking server that does not answer leaves the gates and the phase as
they are without tracking, sets TrackingDegraded naming the server (never a
credential), keeps what was missed and sends it once the server answers; a
job that could not reach its server is recorded by its folder; the retry
delay doubles and gives up after a while."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_vae_runner import VAE_SPEC, _finalization_files
from trainpipe_operator.controller.conditions import build_conditions
from trainpipe_operator.devcluster._proc import free_port
from trainpipe_operator.pipeline import rundir
from trainpipe_operator.pipeline.launchers import ProcessLauncher
from trainpipe_operator.pipeline.runner import LocalRunner
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus, TrackingStatus
from trainpipe_operator.tracking import health
from trainpipe_operator.tracking.runs import PipelineTracker
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

T0 = "2026-01-01T00:00:00+00:00"
FOLDER = rundir.FINALIZATION
SECRET = "tok-3f1c9a77"


def _pipeline(tracking: dict[str, Any] | None) -> TrainingPipeline:
    spec = {**VAE_SPEC, **({"tracking": tracking} if tracking else {})}
    return TrainingPipeline.model_validate({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                            "metadata": {"name": "tones"}, "spec": spec})


def _finalize(run_dir: Path, tracking: dict[str, Any] | None) -> tuple[LocalRunner, PipelineStatus]:
    runner = LocalRunner(_pipeline(tracking), run_dir, ProcessLauncher(), "local",
                         tracking_credentials=MlflowCredentials(token=SECRET))
    evidence = _finalization_files(runner)
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    status.metrics.best_target_metric = 40.0
    if runner.tracker is not None:
        runner.tracker.sync(status)
        assert runner.tracker.job_tracking(status, "Finalization", FOLDER, 1, True) is None  # no server: no target
    runner._finalize_documents_and_gate(status, evidence)
    if runner.tracker is not None:
        runner.tracker.sync(status)
    runner._save(status)
    return runner, status


def _outcomes(status: PipelineStatus) -> dict[str, Any]:
    return {key: [(c.id, c.result, c.value) for c in gate.checks] for key, gate in status.gates.items()}


def test_an_unreachable_server_changes_no_gate_and_is_named_in_the_condition(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    uri = f"http://127.0.0.1:{port}"
    began = datetime.now(timezone.utc)
    runner, status = _finalize(tmp_path / "tracked", {"mlflow": {"trackingUri": uri}})
    took = (datetime.now(timezone.utc) - began).total_seconds()
    _, untracked = _finalize(tmp_path / "untracked", None)

    assert status.phase == untracked.phase == "Succeeded"
    assert _outcomes(status) == _outcomes(untracked)
    condition = next(c for c in status.conditions if c.type == "TrackingDegraded")
    assert condition.status == "True" and condition.reason == "ServerUnreachable"
    assert uri in condition.message
    tracking = status.tracking
    assert tracking is not None and tracking.retry_after is not None and tracking.failures == 1
    assert tracking.pending == ["gate:finalization", "register", "end"]  # champion follows the registration
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"
    # one failed call, then no call before retryAfter: an unreachable server costs seconds, not minutes
    assert took < 30, took
    summary = (runner.run_dir / "summary.md").read_text()
    assert "tracking degraded" in summary and uri in summary
    for path in (runner.run_dir / "state.json", runner.run_dir / "summary.md"):
        assert SECRET not in path.read_text()
    assert SECRET not in status.model_dump_json()


@pytest.mark.integration
@pytest.mark.slow
def test_what_was_missed_is_sent_once_the_server_answers(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from tests.integration.mlflow_server import MlflowServer, mlflow_binary

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    runner, status = _finalize(tmp_path / "run", {"mlflow": {"trackingUri": uri}})
    assert status.tracking is not None and status.tracking.pending
    server = MlflowServer.start(tmp_path / "mlflow", binary=mlflow_binary(), port=port)
    try:
        # The next advance (or reconcile) after the delay: a runner of the same run.
        later = datetime.now(timezone.utc) + timedelta(minutes=2)
        runner.tracker = PipelineTracker(runner.pipeline, runner.run_dir, clock=lambda: later)
        runner.sync_tracking(status)
        tracking = status.tracking
        assert tracking.pending == [] and tracking.degraded is None and tracking.mlflow_parent_run_id
        assert next(c for c in status.conditions if c.type == "TrackingDegraded").status == "False"
        client = MlflowClient(uri)
        tags = client.get_run(tracking.mlflow_parent_run_id).data.tags
        assert tags["gate.finalization.passed"] == "true" and tags["trainpipe.finalPhase"] == "Succeeded"
        assert client.get_model_version_by_alias("tones", "champion").version == tracking.model_version
        assert client.get_model_version_by_alias("tones", "candidate").version == tracking.model_version
    finally:
        server.stop()


def test_a_job_that_could_not_reach_its_server_is_recorded_by_folder(tmp_path: Path) -> None:
    runner = LocalRunner(_pipeline({"mlflow": {"trackingUri": "http://127.0.0.1:9"}}), tmp_path / "run",
                         ProcessLauncher(), "local")
    status = PipelineStatus(phase="Baseline", run_id="r1", started_at=T0)
    rundir.write_json(runner.run_dir / "02_baseline" / TRACKING_STATUS_FILE, {
        "degraded": True, "server": "http://127.0.0.1:9", "error": "connection refused", "time": T0})
    assert runner.tracker is not None
    runner.tracker.job_ended(status, "02_baseline")
    runner.tracker.job_ended(status, "04_optimization/iter_1")  # no file there: nothing to record
    assert status.tracking is not None
    assert list(status.tracking.jobs_degraded) == ["02_baseline"]
    condition = next(c for c in build_conditions(status, 1, T0) if c.type == "TrackingDegraded")
    assert condition.status == "True" and "02_baseline" in condition.message
    assert "http://127.0.0.1:9" in condition.message and "kept training" in condition.message


def test_the_retry_delay_doubles_and_gives_up_after_max_failures() -> None:
    tracking = TrackingStatus()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    health.unreachable(tracking, "http://h:1", "record gate baseline", "refused", now, "gate:baseline")
    assert tracking.retry_after == "2026-01-01T00:01:00+00:00"
    assert not health.may_call(tracking, now) and health.may_call(tracking, now + timedelta(seconds=60))
    health.unreachable(tracking, "http://h:1", "record gate baseline", "refused", now, "gate:baseline")
    assert tracking.retry_after == "2026-01-01T00:02:00+00:00" and tracking.pending == ["gate:baseline"]
    for _ in range(health.MAX_FAILURES - 2):
        health.unreachable(tracking, "http://h:1", "register", "refused", now, "register")
    assert tracking.pending == [] and tracking.retry_after is None
    assert tracking.degraded_reason == health.GAVE_UP and "gave up on: gate:baseline, register" in tracking.degraded
    health.unreachable(tracking, "http://h:1", "end the pipeline run", "refused", now, "end")
    assert tracking.pending == ["end"] and tracking.failures == 1  # new work is retried again
    health.done(tracking, "end")  # a later call that goes through does not hide that something was dropped
    assert tracking.degraded_reason == health.GAVE_UP and "gave up on: gate:baseline, register" in tracking.degraded


def test_a_server_that_answers_again_clears_the_degradation() -> None:
    tracking = TrackingStatus()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    health.unreachable(tracking, "http://h:1", "record gate baseline", "refused", now, "gate:baseline")
    health.done(tracking, "gate:baseline")
    assert (tracking.degraded, tracking.pending, tracking.failures) == (None, [], 0)
    health.refused(tracking, "http://h:1", "register the model m", "PERMISSION_DENIED: no")
    health.done(tracking, None)
    assert tracking.degraded_reason == health.REFUSED  # a refusal stays on record


def test_the_operator_keeps_retrying_a_finished_pipeline_that_is_owed_tracking(tmp_path: Path) -> None:
    from trainpipe_operator.controller import handlers
    from trainpipe_operator.controller.reconcile import Reconciler
    from trainpipe_operator.controller.settings import OperatorSettings

    owed = {"phase": "Succeeded", "tracking": {"pending": ["register"]}}
    assert handlers.running(owed) and not handlers.running({"phase": "Succeeded", "tracking": {"pending": []}})
    assert not handlers.running({"phase": "Failed"})

    uri = f"http://127.0.0.1:{free_port()}"
    pipeline = _pipeline({"mlflow": {"trackingUri": uri}})
    body = {**pipeline.dump(), "metadata": {"name": "tones", "namespace": "team-a", "uid": "0123456789ab",
                                             "generation": 1},
            "status": {"phase": "Succeeded", "runId": "r1", "tracking": {"pending": ["register"]}}}
    reconciler = Reconciler(OperatorSettings(artifact_root=tmp_path))
    run_dir = reconciler.settings.run_dir("team-a", "tones", "0123456789ab")
    rundir.write_yaml(run_dir / "pipeline.yaml", {k: v for k, v in body.items() if k != "status"})
    result = reconciler.reconcile(body)
    status = result.status
    assert status.phase == "Succeeded" and status.tracking is not None
    assert "register" in status.tracking.pending and status.tracking.failures == 1  # tried, the server is down
    assert uri in next(c for c in status.conditions if c.type == "TrackingDegraded").message
