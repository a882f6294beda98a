"""Tracking through the operator (issue 13): a TrainingPipeline with
spec.tracking.mlflow run by the kopf operator on a real kube-apiserver, its
jobs on the real Ray head (Ray Job API), its MLflow server the real one
behind a proxy that refuses any request without the bearer token
(auth_proxy.py). The token is in the namespace's Secret of type
trainpipe.io/mlflow-credentials, which the operator's configuration names.

Read back with MLflow's client: the pipeline run, one run per phase folder,
the gate tags, the baseline's metric history equal to its metrics.json
(relayed by the control plane: a shared Ray cluster's jobs get no
credentials), and the registered version with aliases candidate and
champion (no approval required: Succeeded moves champion). The token is in
no Ray job's info, no status, no run-directory file and no operator log
line."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.auth_proxy import AuthProxy, auth_proxy
from tests.integration.mlflow_server import MlflowServer
from tests.integration.test_tracking_job import assert_histories_equal_metrics_json

from .operator_harness import (
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    get,
    pipeline_manifest,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "tok-operator-91c4-never-shown"
FOLDERS = {"01_planning": "Planning", "02_baseline": "Baseline", "05_finalization": "Finalization"}


@pytest.fixture(scope="module")
def proxy(mlflow_server: MlflowServer) -> Iterator[AuthProxy]:
    with auth_proxy(mlflow_server.uri, TOKEN) as running:
        yield running


def test_a_pipeline_under_the_operator_is_tracked_with_its_namespaces_credentials(
        cluster: Cluster, mlflow_server: MlflowServer, proxy: AuthProxy, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"trackingUri": proxy.uri, "token": TOKEN}
    apply(cluster.admin, {"apiVersion": "v1", "kind": "Secret", "type": "trainpipe.io/mlflow-credentials",
                          "metadata": {"name": "mlflow", "namespace": "default"},
                          "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    # The operator's configuration (the chart's operator.mlflowCredentialsSecret and trackingAllowedUris).
    monkeypatch.setenv("TRAINPIPE_MLFLOW_SECRET", "mlflow")
    monkeypatch.setenv("TRAINPIPE_TRACKING_ALLOWED_URIS", proxy.uri)
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path).start()
    name = "tracked-op"
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET,
                                           tracking={"mlflow": {"trackingUri": proxy.uri}}))
    try:
        obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=900)
    finally:
        operator.stop()
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    tracking = status["tracking"]
    assert not tracking.get("degraded") and not tracking.get("pending"), tracking
    assert not proxy.refused, proxy.refused[:5]  # nothing went without the token

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(f"default/{name}")
    assert experiment is not None
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs[tracking["mlflowParentRunId"]]
    assert parent.data.tags["trainpipe.namespace"] == "default" and parent.data.tags["trainpipe.pipeline"] == name
    assert parent.data.tags["trainpipe.finalPhase"] == "Succeeded"
    for key in ("planning", "baseline", "finalization"):
        assert parent.data.tags[f"gate.{key}.passed"] == "true", key
    children = {r.data.tags["trainpipe.jobKey"]: r for r in runs.values() if r.info.run_id != parent.info.run_id}
    assert set(children) == set(FOLDERS)
    for folder, phase in FOLDERS.items():
        assert children[folder].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert children[folder].data.tags["trainpipe.phase"] == phase
        assert "gate.json" in {a.path for a in client.list_artifacts(children[folder].info.run_id)}, folder

    run_dir = cluster.run_dir(name)
    baseline = children["02_baseline"].info.run_id
    assert "runId" not in (run_dir / "02_baseline/job_request.yaml").read_text()  # the job logged nothing itself
    assert_histories_equal_metrics_json(client, baseline, run_dir / "02_baseline")
    assert client.get_run(baseline).info.status == "FINISHED"

    version = client.get_model_version_by_alias(f"default.{name}", "champion")
    assert version.version == str(tracking["modelVersion"])
    assert client.get_model_version_by_alias(f"default.{name}", "candidate").version == version.version
    assert version.run_id == children["05_finalization"].info.run_id

    # The token: in no Ray job, status, run-directory file or operator log line.
    uid = obj["metadata"]["uid"]
    jobs = [j for j in cluster.ray_jobs() if (j.submission_id or "").startswith(f"{name}-")]
    assert jobs and uid
    for job in jobs:
        assert TOKEN not in json.dumps({"entrypoint": job.entrypoint, "runtime_env": job.runtime_env,
                                        "metadata": job.metadata}, default=str)
    assert TOKEN not in json.dumps(get(cluster.admin, name))
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in operator.log_path.read_text(errors="replace")
