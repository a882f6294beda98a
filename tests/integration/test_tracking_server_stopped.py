"""The MLflow server stopped mid-run (issue 13): `trainpipe run` of the tiny
digits pipeline against a real MLflow server that is stopped while the
baseline job trains, after Planning and the job's first epoch were logged.
The pipeline Succeeds with the same gates; TrackingDegraded, summary.md and
the job's tracking_status.json name the server; what went out before the
stop is on the server (restarted on its port and store, read back with
MLflow's client). One pipeline run (a minute or two on two cores)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.local_pipelines import TRAINPIPE, decisions, manifest, state
from tests.integration.mlflow_server import MlflowServer, running_mlflow
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 4  # time to stop the server while the baseline trains, and no more


def _baseline_has_logged_an_epoch(run_dir: Path) -> bool:
    """The baseline job is training and its first epoch is in metrics.json
    (so it was sent: the job logs each epoch after writing it)."""
    try:
        status = json.loads((run_dir / "state.json").read_text())
        epochs = json.loads((run_dir / "02_baseline/logs/metrics.json").read_text())["epochs"]
    except (OSError, ValueError, KeyError):
        return False
    return status.get("phase") == "Baseline" and len(epochs) >= 1


def test_a_server_stopped_mid_run_leaves_a_succeeded_pipeline_with_the_degradation_recorded(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "stopped"
    with running_mlflow(tmp_path / "mlflow") as server:
        uri, port = server.uri, int(server.uri.rsplit(":", 1)[1])
        path = manifest(tmp_path, "digits-stopped", baseline={"epochs": EPOCHS},
                        tracking={"mlflow": {"trackingUri": uri}, "stepEvery": 5})
        proc = subprocess.Popen([TRAINPIPE, "run", str(path), "--run-dir", str(run_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 600
            while not _baseline_has_logged_an_epoch(run_dir):
                assert proc.poll() is None, "the pipeline ended before its baseline trained"
                assert time.monotonic() < deadline, "no baseline epoch within 10 minutes"
                time.sleep(0.2)
            server.stop()
            output, _ = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, output[-3000:]

    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    assert [d for _, d in decisions(run_dir)] == ["start", "gate-passed", "deploy-baseline", "gate-passed"]
    assert all(gate.passed for gate in status.gates.values())  # tracking decided nothing
    condition = next(c for c in status.conditions if c.type == "TrackingDegraded")
    assert condition.status == "True" and condition.reason == "ServerUnreachable", condition
    assert uri in condition.message
    tracking = status.tracking
    assert tracking is not None
    # Owed, and sent by the next advance once the server answers (champion follows the registration).
    assert {"gate:baseline", "register", "end"} <= set(tracking.pending), tracking.pending
    assert uri in tracking.jobs_degraded["02_baseline"]  # the job could not reach it: it kept training
    job_status = json.loads((run_dir / "02_baseline" / TRACKING_STATUS_FILE).read_text())
    assert job_status["degraded"] is True and job_status["server"] == uri
    evidence = json.loads((run_dir / "02_baseline/evidence.json").read_text())
    assert evidence["status"] == "completed" and len(evidence["epochs"]) == EPOCHS
    summary = (run_dir / "summary.md").read_text()
    assert "tracking degraded" in summary and uri in summary

    # What went out before the stop is there: the server again, on its store.
    with MlflowServer.start(tmp_path / "mlflow", port=port) as again:
        client = MlflowClient(again.uri)
        parent = client.get_run(str(tracking.mlflow_parent_run_id))
        assert parent.data.tags["gate.planning.passed"] == "true"
        assert "trainpipe.finalPhase" not in parent.data.tags  # the end was not sent
        baseline = client.get_run(tracking.child_runs["02_baseline"])
        logged = [m.step for m in client.get_metric_history(baseline.info.run_id, "train_loss")]
        assert logged and logged == sorted(set(logged)) and logged[0] == 1 and len(logged) < EPOCHS
        assert client.search_model_versions(f"name='{tracking.registered_model}'") == []
