"""The MLflow credentials of the jobs the operator launches (issue 13): a
RayJob's pods get them as references to the namespace's Secret
(``secretKeyRef``), never as values; a job on the shared Ray cluster (Ray
Job API) gets none at all, and the control plane relays its record. No
credential value appears in a RayJob, a Ray submission, a job config, the
status or the run directory."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException

from tests.crds.rayjob_minimal import MINIMAL_RAYJOB_CRD
from trainpipe_operator.controller.reconcile import Reconciler
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.kuberay.rayjob import build_rayjob
from trainpipe_operator.kuberay.schema import validate_against_kuberay
from trainpipe_operator.spec.pipeline import ResourcesSpec, TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_operator.tracking.credentials import SECRET_TYPE, secret_env
from trainpipe_operator.tracking.runs import PipelineTracker, tracker_for
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

# Port 1 on loopback: refused at once, so the control plane's own calls fail fast.
URI = "http://127.0.0.1:1"
TOKEN = "tok-5e0c-secret-value"
PASSWORD = "pw-77f1-secret-value"
SECRETS = (TOKEN, PASSWORD, base64.b64encode(TOKEN.encode()).decode(), base64.b64encode(PASSWORD.encode()).decode())
OWNER = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "name": "p", "uid": "u-1"}


def _no_secret_in(text: str) -> None:
    for value in SECRETS:
        assert value not in text


def _v1secret(**data: str) -> V1Secret:
    return V1Secret(type=SECRET_TYPE, metadata=V1ObjectMeta(name="mlflow"),
                    data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


def test_secret_env_references_the_keys_of_the_kind_the_secret_holds() -> None:
    assert secret_env("mlflow", MlflowCredentials(token=TOKEN)) == [
        {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}}}]
    basic = secret_env("mlflow", MlflowCredentials(username="svc", password=PASSWORD))
    assert [(e["name"], e["valueFrom"]["secretKeyRef"]["key"]) for e in basic] == [
        ("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password")]
    _no_secret_in(json.dumps(basic))
    # No verified credentials (no Secret, another server's, none named): no reference at all.
    assert secret_env("mlflow", None) == [] and secret_env(None, MlflowCredentials(token=TOKEN)) == []
    assert secret_env("mlflow", MlflowCredentials()) == []


def test_the_head_and_workers_get_the_references_and_the_rayjob_stays_valid() -> None:
    env = secret_env("mlflow", MlflowCredentials(token=TOKEN))
    job = build_rayjob("p-02-baseline", "team-a", OWNER, "trainer:1", "/artifacts/team-a/job.yaml",
                       ResourcesSpec(workers=2), {"claimName": "c", "mountPath": "/artifacts/team-a"},
                       service_account=None, env=env)
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    # The driver runs on the head; Ray Train's rank 0 on the head or a worker.
    assert head["env"] == env and worker["env"] == env
    assert "env" not in job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert validate_against_kuberay(job, MINIMAL_RAYJOB_CRD) == []
    without = build_rayjob("p-02-baseline", "team-a", OWNER, "trainer:1", "/artifacts/team-a/job.yaml",
                           ResourcesSpec(), {"claimName": "c", "mountPath": "/artifacts/team-a"},
                           service_account=None)
    assert "env" not in without["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


class _CoreApi:
    def __init__(self, secret: V1Secret | None) -> None:
        self.secret = secret

    def read_namespaced_secret(self, name: str, namespace: str) -> V1Secret:
        if self.secret is None or (name, namespace) != ("mlflow", "team-a"):
            raise ApiException(status=404, reason="Not Found")
        return self.secret


class _CustomApi:
    """The RayJob calls the launcher makes, as the API server answers them."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        for body in self.created:
            if body["metadata"]["name"] == name:
                return body
        raise ApiException(status=404, reason="Not Found")

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(json.loads(json.dumps(body)))
        return body


def _body(runtime: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
            "metadata": {"name": "p", "namespace": "team-a", "uid": "u-1", "generation": 1},
            "spec": {"data": {"source": "builtin:digits"}, "runtime": runtime,
                     "resources": {"workers": 1, "gpusPerWorker": 0},
                     "tracking": {"mlflow": {"trackingUri": URI}}}}


def _everything_written(root: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*") if p.is_file())


def _record_trackers(monkeypatch: pytest.MonkeyPatch) -> list[PipelineTracker]:
    """The trackers the reconcile's runners get."""
    from trainpipe_operator.pipeline import runner

    made: list[PipelineTracker] = []

    def recording(*args: Any, **kwargs: Any) -> PipelineTracker | None:
        tracker = tracker_for(*args, **kwargs)
        if tracker is not None:
            made.append(tracker)
        return tracker

    monkeypatch.setattr(runner, "tracker_for", recording)
    return made


@pytest.mark.parametrize("data", [{"token": TOKEN}, {"username": "svc", "password": PASSWORD}],
                         ids=["token", "basic"])
def test_a_rayjob_gets_secret_references_and_no_value_anywhere(tmp_path: Path, data: dict[str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    custom = _CustomApi()
    settings = OperatorSettings(artifact_root=tmp_path, mlflow_secret="mlflow", tracking_allowed_uris=[URI],
                                rayjob_image="trainer:1")
    reconciler = Reconciler(settings, core_api=_CoreApi(_v1secret(trackingUri=URI, **data)), custom_api=custom)
    trackers = _record_trackers(monkeypatch)
    result = reconciler.reconcile(_body({"type": "rayjob"}))
    assert result.waiting_on is not None, result.status.message  # the Planning job was created
    [job] = custom.created
    containers = [job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0],
                  job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]]
    for container in containers:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert set(refs) == ({"MLFLOW_TRACKING_TOKEN"} if "token" in data
                             else {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"})
        assert all(ref["name"] == "mlflow" for ref in refs.values())
    _no_secret_in(json.dumps(job))
    assert [t.relay_jobs for t in trackers] == [False]  # its jobs log themselves
    _no_secret_in(result.status.model_dump_json())
    _no_secret_in(_everything_written(tmp_path))


def test_a_rayjob_gets_nothing_when_the_secret_is_for_another_server(tmp_path: Path) -> None:
    custom = _CustomApi()
    settings = OperatorSettings(artifact_root=tmp_path, mlflow_secret="mlflow", tracking_allowed_uris=[URI],
                                rayjob_image="trainer:1")
    secret = _v1secret(trackingUri="http://other:5000", token=TOKEN)
    Reconciler(settings, core_api=_CoreApi(secret), custom_api=custom).reconcile(_body({"type": "rayjob"}))
    [job] = custom.created
    assert "env" not in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


class _FakeMlflow:
    """The control plane's MLflow calls that make runs (ids only)."""

    def __init__(self) -> None:
        self.runs = 0

    def get_or_create_experiment(self, name: str) -> str:
        return "7"

    def find_run(self, experiment: str, tags: dict[str, str]) -> None:
        return None

    def create_run(self, experiment: str, name: str, tags: dict[str, str]) -> str:
        self.runs += 1
        return f"run-{self.runs}"

    def log_batch(self, run: str, **kwargs: Any) -> None:
        return None


def _tracker(tmp_path: Path, relay: bool) -> PipelineTracker:
    pipeline = TrainingPipeline.model_validate(_body({"type": "ray", "ray": {"address": "http://ray:8265"}}))
    fake = _FakeMlflow()
    tracker = PipelineTracker(pipeline, tmp_path, MlflowCredentials(token=TOKEN),
                              client_factory=lambda uri, credentials: fake)  # type: ignore[arg-type,return-value]
    tracker.relay_jobs = relay
    return tracker


def test_a_relayed_job_is_told_no_mlflow_run_and_its_config_holds_no_credential(tmp_path: Path) -> None:
    status = PipelineStatus(phase="Baseline", run_id="r1")
    direct = _tracker(tmp_path, relay=False).job_tracking(status, "Baseline", "02_baseline", 1, True)
    assert direct is not None and direct.mlflow is not None
    relayed = _tracker(tmp_path, relay=True).job_tracking(PipelineStatus(phase="Baseline", run_id="r1"),
                                                         "Baseline", "02_baseline", 1, True)
    # MLflow only: nothing else to report to, so the job gets no tracking section at all.
    assert relayed is None
    _no_secret_in(json.dumps(direct.model_dump(mode="json")))


def test_the_reconcile_relays_ray_job_api_jobs_only_with_credentials(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Job API (runtime ray): the runner's tracker relays; the
    submission itself carries no runtime_env and no environment."""
    submitted: list[dict[str, Any]] = []

    class _Client:
        def __init__(self, address: str, headers: dict[str, str]) -> None:
            pass

        def get_job_info(self, submission_id: str) -> Any:
            if not any(s["submission_id"] == submission_id for s in submitted):
                raise RuntimeError(f"Job {submission_id} does not exist")
            return type("Info", (), {"status": "RUNNING"})()

        def submit_job(self, **kwargs: Any) -> str:
            submitted.append(kwargs)
            return str(kwargs["submission_id"])

    import ray.job_submission

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", _Client)
    trackers = _record_trackers(monkeypatch)
    address = "http://127.0.0.1:8265"
    settings = OperatorSettings(artifact_root=tmp_path, mlflow_secret="mlflow", tracking_allowed_uris=[URI],
                                ray_allowed_addresses=[address])
    reconciler = Reconciler(settings, core_api=_CoreApi(_v1secret(trackingUri=URI, token=TOKEN)))
    result = reconciler.reconcile(_body({"type": "ray", "ray": {"address": address}}))
    assert result.waiting_on is not None, result.status.message
    assert submitted and [t.relay_jobs for t in trackers] == [True]
    for submission in submitted:
        assert not submission.get("runtime_env")
        _no_secret_in(json.dumps(submission, default=str))
    _no_secret_in(result.status.model_dump_json())
    _no_secret_in(_everything_written(tmp_path))
