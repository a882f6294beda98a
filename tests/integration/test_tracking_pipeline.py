"""`trainpipe run` of the tiny digits pipeline with spec.tracking.mlflow
against a real MLflow server (issue 13), read back with MLflow's own
client: one pipeline run with the resolved spec as params and the gates'
outcomes as tags, one run per phase folder with its tags and its gate
report, the registered version with alias candidate, then `trainpipe
approve` moving champion to it with the approver. And a tracking server
that is not there: the same pipeline Succeeds with the same gates, the
TrackingDegraded condition naming the server. Two pipeline runs in all
(each a minute or two on two cores)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.mlflow_server import MlflowServer
from tests.integration.test_pipeline_local import TRAINPIPE, decisions, manifest, run, state
from trainpipe_operator.devcluster._proc import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "tok-never-written-7d1e"
FOLDERS = {"01_planning": "Planning", "02_baseline": "Baseline", "05_finalization": "Finalization"}


def _text_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".md", ".log", ".txt")]


def test_a_tracked_pipeline_then_approval(mlflow_server: MlflowServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    uri = mlflow_server.uri
    run_dir = tmp_path / "tracked"
    path = manifest(tmp_path, "digits-tracked", approval={"required": True},
                    tracking={"mlflow": {"trackingUri": uri, "registeredModel": "digits-classifier"}})
    # A credential in the environment (the server ignores it): read once, sent only to the server.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SECRET)
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "AwaitingApproval"
    assert [d for _, d in decisions(run_dir)] == ["start", "gate-passed", "deploy-baseline", "await-approval"]
    tracking = status.tracking
    assert tracking is not None and tracking.degraded is None and not tracking.pending, tracking
    assert next(c for c in status.conditions if c.type == "TrackingDegraded").status == "False"

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits-tracked")
    assert experiment is not None
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs[str(tracking.mlflow_parent_run_id)]
    children = {r.data.tags["trainpipe.jobKey"]: r for r in runs.values() if r.info.run_id != parent.info.run_id}
    assert set(children) == set(FOLDERS)  # one run per phase folder, no duplicates
    assert parent.data.tags["trainpipe.runId"] == status.run_id
    assert parent.data.params["spec.data.imageSize"] == "8" and parent.data.params["spec.baseline.epochs"] == "2"
    assert parent.data.params["spec.tracking.mlflow.trackingUri"] == uri
    assert len(parent.data.params["spec_hash"]) == 16
    for key in ("planning", "baseline"):
        assert parent.data.tags[f"gate.{key}.passed"] == "true" and parent.data.tags[f"gate.{key}.failed"] == ""
    assert parent.data.tags["gate.finalization.failed"] == "approval"
    assert parent.data.tags["trainpipe.finalPhase"] == "AwaitingApproval"
    for folder, phase in FOLDERS.items():
        child = children[folder]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["trainpipe.phase"] == phase and child.data.tags["trainpipe.attempt"] == "1"
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "gate.json" in files, (folder, files)
    assert "reproducibility_gate.md" in {a.path for a in client.list_artifacts(children["01_planning"].info.run_id)}
    assert "gate_report.md" in {a.path for a in client.list_artifacts(children["02_baseline"].info.run_id)}
    final = children["05_finalization"].info.run_id
    assert {"model/model.onnx", "model/deployment_guide.md", "model/test_results.md"} <= {
        a.path for a in client.list_artifacts(final, "model")}
    # the jobs were told their folder's run, and logged into it: histories equal metrics.json
    baseline = children["02_baseline"].info.run_id
    assert f"runId: {baseline}" in (run_dir / "02_baseline/job_request.yaml").read_text()
    epochs = json.loads((run_dir / "02_baseline/logs/metrics.json").read_text())["epochs"]
    history = [(m.step, m.value) for m in client.get_metric_history(baseline, "train_loss")]
    assert history == [(e["num"], pytest.approx(e["train_loss"])) for e in epochs]

    version = client.get_model_version_by_alias("digits-classifier", "candidate")
    assert version.version == tracking.model_version and version.run_id == final
    assert float(version.tags["test_acc"]) == pytest.approx(status.metrics.test_acc, abs=1e-5)
    assert version.tags["runId"] == status.run_id and version.tags["evidenceDigest"].startswith("sha256:")
    assert "test" in (version.description or "").lower()

    approved = subprocess.run([TRAINPIPE, "approve", str(run_dir), "--by", "carol"], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_TOKEN": SECRET})
    assert approved.returncode == 0, approved.stderr
    assert state(run_dir).phase == "Succeeded"
    shown = subprocess.run([TRAINPIPE, "status", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert f"model digits-classifier version {version.version} (candidate, champion)" in shown.stdout
    champion = client.get_model_version_by_alias("digits-classifier", "champion")
    assert champion.version == version.version and champion.tags["approved_by"] == "carol"
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags["trainpipe.finalPhase"] == "Succeeded" and tags["gate.finalization.passed"] == "true"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    leaked = [p for p in _text_files(run_dir) if SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked
    assert all(SECRET not in v for v in parent.data.params.values())


def test_an_unreachable_server_leaves_a_succeeded_pipeline_with_the_degradation_named(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir = tmp_path / "degraded"
    path = manifest(tmp_path, "digits-untracked", tracking={"mlflow": {"trackingUri": uri}})
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded"
    assert [d for _, d in decisions(run_dir)] == ["start", "gate-passed", "deploy-baseline", "gate-passed"]
    assert all(gate.passed for gate in status.gates.values())  # tracking decided nothing
    condition = next(c for c in status.conditions if c.type == "TrackingDegraded")
    assert condition.status == "True" and condition.reason == "ServerUnreachable" and uri in condition.message
    assert status.tracking is not None and "register" in status.tracking.pending
    assert "tracking degraded" in (run_dir / "summary.md").read_text()
    shown = subprocess.run([TRAINPIPE, "status", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert "degraded:" in shown.stdout and uri in shown.stdout and "to retry" in shown.stdout
    assert "mlflow" not in (run_dir / "02_baseline/job_request.yaml").read_text()  # no run to report to
