"""Operator-launched jobs and an MLflow server that needs credentials (issue
13), against the real MLflow server behind a proxy that refuses any request
without the bearer token (auth_proxy.py), read back with MLflow's client:

- a RayJob's pods: the env the RayJob names (``secretKeyRef``), resolved
  from the Secret as the kubelet does, lets the real trainer log its run;
- a Ray Job API job (shared cluster): the job is given no MLflow run and no
  credential; the control plane relays its record with its own, and the
  run's histories equal ``metrics.json``; relaying again repeats nothing.

Nowhere in the run directory, the job config or the RayJob is the token."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.integration.auth_proxy import AuthProxy, auth_proxy
from tests.integration.mlflow_server import MlflowServer
from tests.integration.test_tracking_job import assert_histories_equal_metrics_json
from trainpipe_operator.kuberay.rayjob import build_rayjob
from trainpipe_operator.spec.pipeline import ResourcesSpec, TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_operator.tracking.credentials import SECRET_TYPE, from_secret, secret_env
from trainpipe_operator.tracking.relay import RELAYED_FILE
from trainpipe_operator.tracking.runs import PipelineTracker
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tracking.mlflow_rest import MlflowRest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "tok-3f9a-never-shown"
OWNER = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "name": "creds", "uid": "u-1"}


@pytest.fixture(scope="module")
def proxy(mlflow_server: MlflowServer) -> Iterator[AuthProxy]:
    with auth_proxy(mlflow_server.uri, TOKEN) as running:
        yield running


def _secret(uri: str) -> dict[str, Any]:
    """The namespace's Secret as the API server returns it (base64 data)."""
    data = {"trackingUri": uri, "token": TOKEN}
    return {"type": SECRET_TYPE, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _tracker(uri: str, run_dir: Path, name: str) -> PipelineTracker:
    pipeline = TrainingPipeline.model_validate({
        "apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"},
        "spec": {"data": {"source": "builtin:digits"}, "tracking": {"mlflow": {"trackingUri": uri}}}})
    credentials, problem = from_secret(_secret(uri), "mlflow", "team-a", uri)
    assert problem is None
    return PipelineTracker(pipeline, run_dir, credentials)


def _no_token_under(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_rayjobs_pods_log_with_the_credentials_the_secret_reference_gives(
        make_job, tmp_path: Path, proxy: AuthProxy, mlflow_server: MlflowServer) -> None:
    run_dir = tmp_path / "rayjob"
    tracker = _tracker(proxy.uri, run_dir, "creds-rayjob")
    status = PipelineStatus(phase="Baseline", run_id="r1")
    tracker.sync(status)
    tracking = tracker.job_tracking(status, "Baseline", "02_baseline", 1, True)
    assert tracking is not None and tracking.mlflow is not None and status.tracking is not None
    assert status.tracking.degraded is None, status.tracking.degraded  # the control plane got in
    job_dir = run_dir / "02_baseline"
    config = make_job("02_baseline", runDir=str(job_dir)).model_copy(update={"tracking": tracking})
    job_dir.mkdir(parents=True)
    job_file = job_dir / "job_request.yaml"
    job_file.write_text(config.to_yaml(), encoding="utf-8")

    rayjob = build_rayjob("creds-02-baseline", "team-a", OWNER, "trainer:1", str(job_file), ResourcesSpec(),
                          {"claimName": "c", "mountPath": str(tmp_path)}, service_account=None,
                          env=secret_env("mlflow", tracker._credentials))
    assert TOKEN not in json.dumps(rayjob)
    # The kubelet's part: each secretKeyRef resolved from the Secret.
    secret = _secret(proxy.uri)["data"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: base64.b64decode(secret[e["valueFrom"]["secretKeyRef"]["key"]]).decode() for e in head["env"]}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    before = len(proxy.allowed)
    done = subprocess.run([sys.executable, "-m", "trainpipe_trainer.run", "--config", str(job_file), "--no-ray"],
                          env={**clean, **env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(proxy.allowed) > before and not proxy.refused  # the job itself logged, with the token

    reader = MlflowClient(tracking_uri=mlflow_server.uri)
    assert tracking.mlflow is not None
    assert_histories_equal_metrics_json(reader, tracking.mlflow.run_id, job_dir)
    assert reader.get_run(tracking.mlflow.run_id).info.status == "FINISHED"
    assert not (job_dir / TRACKING_STATUS_FILE).exists()
    _no_token_under(run_dir)


def test_a_ray_job_api_job_gets_no_credentials_and_the_control_plane_relays_its_record(
        make_job, tmp_path: Path, proxy: AuthProxy, mlflow_server: MlflowServer) -> None:
    run_dir = tmp_path / "ray"
    tracker = _tracker(proxy.uri, run_dir, "creds-ray")
    tracker.relay_jobs = True  # what the reconcile sets for runtime ray with credentials
    status = PipelineStatus(phase="Baseline", run_id="r1")
    tracker.sync(status)
    assert tracker.job_tracking(status, "Baseline", "02_baseline", 1, True) is None  # nothing for the job to log
    assert status.tracking is not None
    run_id = status.tracking.child_runs["02_baseline"]

    job_dir = run_dir / "02_baseline"
    config = make_job("02_baseline", runDir=str(job_dir), train={"epochs": 3})
    job_dir.mkdir(parents=True)
    (job_dir / "job_request.yaml").write_text(config.to_yaml(), encoding="utf-8")
    sent = len(proxy.allowed)
    evidence = run_job(JobConfig.from_yaml_file(job_dir / "job_request.yaml"), stop=StopSignal())
    assert evidence.status == "completed"
    assert len(proxy.allowed) == sent and not proxy.refused  # the job sent nothing at all

    tracker.job_ended(status, "02_baseline", config)
    assert not proxy.refused and status.tracking.degraded is None and not status.tracking.jobs_degraded
    reader = MlflowClient(tracking_uri=mlflow_server.uri)
    assert_histories_equal_metrics_json(reader, run_id, job_dir)
    run = reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["config_hash"] == config.config_hash()
    assert run.data.params["model.name"] == "smallcnn"
    assert not any(k.startswith("step/") for k in run.data.metrics)  # per-step metrics are not relayed
    artifacts = {a.path for a in reader.list_artifacts(run_id)}
    assert {"confusion_matrix", "learning_curves.png"} <= artifacts
    assert {a.path for a in reader.list_artifacts(run_id, "confusion_matrix")} == {
        f"confusion_matrix/epoch_{n}.png" for n in (1, 2, 3)}

    # A replayed reconcile does not relay it again; and were it sent again, no epoch would be twice.
    sent = len(proxy.allowed)
    tracker.job_ended(status, "02_baseline", config)
    assert len(proxy.allowed) == sent
    (job_dir / RELAYED_FILE).unlink()
    tracker.job_ended(status, "02_baseline", config)
    assert len(proxy.allowed) > sent
    assert_histories_equal_metrics_json(reader, run_id, job_dir)
    _no_token_under(run_dir)

    # The proxy does refuse what comes without the token.
    with pytest.raises(Exception, match="401|UNAUTHENTICATED|credentials"):
        MlflowRest(proxy.uri, retries=0).get_run(run_id)
