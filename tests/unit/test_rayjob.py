"""The RayJob the operator creates for ``runtime.type: rayjob``: checked
against KubeRay's own CRD schema (where it is found) and the project's own
cut of it (tests/crds/rayjob-minimal.yaml, always), and KubeRay's status
read back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.crds.rayjob_minimal import MINIMAL_RAYJOB_CRD
from trainpipe_operator.kuberay.rayjob import (
    MANAGED_BY_LABEL,
    PIPELINE_LABEL,
    build_rayjob,
    cpu_quantity,
    rayjob_outcome,
)
from trainpipe_operator.kuberay.schema import (
    crd_missing_reason,
    kuberay_crd_path,
    to_json_schema,
    validate_against_kuberay,
)
from trainpipe_operator.spec.pipeline import ResourcesSpec

OWNER = {
    "apiVersion": "trainpipe.io/v1alpha1",
    "kind": "TrainingPipeline",
    "name": "digits",
    "uid": "0b7e8a52-3c1d-4f5e-9a6b-1c2d3e4f5a6b",
}
STORAGE = {"claimName": "trainpipe-artifacts", "mountPath": "/artifacts"}
JOB_FILE = "/artifacts/digits/02_baseline/job.yaml"

RESOURCES = {
    "cpu-only": ResourcesSpec(),
    "2-gpu-workers": ResourcesSpec(workers=2, gpus_per_worker=1, cpus_per_worker=4, memory="16Gi"),
    "4-workers": ResourcesSpec(workers=4, cpus_per_worker=0.5, memory="2Gi"),
    "4-workers-2-gpus-each": ResourcesSpec(
        workers=4, gpus_per_worker=2, cpus_per_worker=8, memory="32Gi"
    ),
}



@pytest.fixture(params=["kuberay", "own"])
def crd(request: pytest.FixtureRequest) -> Path:
    """KubeRay's RayJob CRD (skipped, saying why, where it is not found) and
    the project's own cut of it, which rejects the same mistakes."""
    if request.param == "own":
        return MINIMAL_RAYJOB_CRD
    path = kuberay_crd_path()
    if path is None:
        pytest.skip(crd_missing_reason())
    return path


def make(resources: ResourcesSpec, **kwargs) -> dict:
    args = {"service_account": "trainpipe-jobs", **kwargs}
    return build_rayjob(
        "digits-baseline-1",
        "ml",
        OWNER,
        "trainpipe-trainer:0.1.0",
        JOB_FILE,
        resources,
        STORAGE,
        **args,
    )


def pod_specs(rayjob: dict) -> dict[str, dict]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return {
        "head": cluster["headGroupSpec"]["template"]["spec"],
        "worker": cluster["workerGroupSpecs"][0]["template"]["spec"],
        "submitter": rayjob["spec"]["submitterPodTemplate"]["spec"],
    }


# --- against KubeRay's CRD -------------------------------------------------


@pytest.mark.parametrize("case", sorted(RESOURCES))
def test_generated_rayjob_validates_against_the_crd(case, crd):
    assert validate_against_kuberay(make(RESOURCES[case]), crd) == []


def test_rayjob_without_service_account_and_ttl_zero_validates(crd):
    job = make(ResourcesSpec(), service_account=None, ttl_seconds=0, metrics_port=9400, ray_version="2.60.0")
    assert validate_against_kuberay(job, crd) == []


def test_wrong_type_in_ray_cluster_spec_is_reported_with_its_path(crd):
    broken = make(RESOURCES["2-gpu-workers"])
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    problems = validate_against_kuberay(broken, crd)
    assert problems == [
        "spec.rayClusterSpec.workerGroupSpecs[0].replicas: 'two' is not of type 'integer'"
    ]


def test_misspelt_field_and_bad_quantity_and_int32_overflow_are_reported(crd):
    broken = make(RESOURCES["cpu-only"])
    head = broken["spec"]["rayClusterSpec"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["resourceLimits"] = {}
    head["rayStartParams"]["num-cpus"] = 0  # a map of strings
    broken["spec"]["ttlSecondsAfterFinished"] = 2**31
    del broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    problems = "\n".join(validate_against_kuberay(broken, crd))
    assert "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]: " in problems
    assert "'resourceLimits' was unexpected" in problems
    assert (
        "spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus: 0 is not of type 'string'"
        in problems
    )
    assert "spec.ttlSecondsAfterFinished: 2147483648 is not a 'int32'" in problems
    assert "spec.rayClusterSpec.workerGroupSpecs[0]: 'groupName' is a required property" in problems


def test_wrong_kind_and_owner_reference_without_uid_are_reported(crd):
    broken = make(RESOURCES["cpu-only"])
    broken["kind"] = "RayCluster"
    del broken["metadata"]["ownerReferences"][0]["uid"]
    problems = validate_against_kuberay(broken, crd)
    assert "kind: expected 'RayJob', got 'RayCluster'" in problems
    assert "metadata.ownerReferences[0]: 'uid' is a required property" in problems


def test_crd_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINPIPE_KUBERAY_CRDS", str(tmp_path))
    assert kuberay_crd_path() is None
    assert "TRAINPIPE_KUBERAY_CRDS" in crd_missing_reason()
    with pytest.raises(FileNotFoundError, match="ray.io_rayjobs.yaml"):
        validate_against_kuberay(make(ResourcesSpec()))
    (tmp_path / "ray.io_rayjobs.yaml").write_text("kind: CustomResourceDefinition\n")
    assert kuberay_crd_path() == tmp_path / "ray.io_rayjobs.yaml"


def test_openapi_translation():
    schema = to_json_schema(
        {
            "type": "object",
            "properties": {
                "q": {
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "x-kubernetes-int-or-string": True,
                },
                "p": {"type": "integer", "x-kubernetes-int-or-string": True},
                "n": {"type": "string", "nullable": True, "default": "x"},
                "m": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {},
                },
            },
            "x-kubernetes-validations": [{"rule": "self.q > 0"}],
        }
    )
    assert schema["additionalProperties"] is False
    assert "x-kubernetes-validations" not in schema
    assert schema["properties"]["q"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert schema["properties"]["p"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert schema["properties"]["n"] == {"type": ["string", "null"]}
    assert "additionalProperties" not in schema["properties"]["m"]


# --- the object itself -------------------------------------------------------


def test_shape_entrypoint_and_lifecycle():
    job = make(RESOURCES["4-workers"], ttl_seconds=600)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"] == "digits-baseline-1" and job["metadata"]["namespace"] == "ml"
    spec = job["spec"]
    assert spec["entrypoint"] == f"python -m trainpipe_trainer.run --config {JOB_FILE}"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["submissionMode"] == "K8sJobMode"
    [group] = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert group["groupName"] == "workers"
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    [head_container] = head["template"]["spec"]["containers"]
    assert head_container["name"] == "ray-head"
    assert head_container["image"] == "trainpipe-trainer:0.1.0"
    assert {p["containerPort"] for p in head_container["ports"]} == {6379, 8265, 10001}
    assert head_container["resources"]["requests"] == head_container["resources"]["limits"]
    assert set(head_container["resources"]["limits"]) == {"cpu", "memory"}


def test_job_file_with_spaces_is_quoted():
    job = build_rayjob(
        "j", "ml", OWNER, "img", "/artifacts/my run/job.yaml", ResourcesSpec(), STORAGE, None
    )
    assert (
        job["spec"]["entrypoint"]
        == "python -m trainpipe_trainer.run --config '/artifacts/my run/job.yaml'"
    )


@pytest.mark.parametrize("case", sorted(RESOURCES))
def test_gpu_requests_present_exactly_when_gpus_per_worker_positive(case):
    resources = RESOURCES[case]
    pods = pod_specs(make(resources))
    [worker] = pods["worker"]["containers"]
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    assert limits == requests
    assert limits["cpu"] == cpu_quantity(resources.cpus_per_worker)
    assert limits["memory"] == resources.memory
    if resources.gpus_per_worker > 0:
        assert limits["nvidia.com/gpu"] == str(resources.gpus_per_worker)
    else:
        assert "nvidia.com/gpu" not in limits
    for name in ("head", "submitter"):  # never a GPU outside the workers
        for container in pods[name]["containers"]:
            assert "nvidia.com/gpu" not in container["resources"]["limits"]
            assert "nvidia.com/gpu" not in container["resources"]["requests"]


def test_cpu_quantity():
    assert [cpu_quantity(c) for c in (1, 4.0, 0.5, 2.25)] == ["1", "4", "500m", "2250m"]


def test_owner_reference_and_labels():
    job = make(RESOURCES["cpu-only"])
    assert job["metadata"]["ownerReferences"] == [
        {**OWNER, "controller": True, "blockOwnerDeletion": True}
    ]
    labels = job["metadata"]["labels"]
    assert labels[MANAGED_BY_LABEL] == "trainpipe"
    assert labels[PIPELINE_LABEL] == "digits"
    cluster = job["spec"]["rayClusterSpec"]
    for template in (
        cluster["headGroupSpec"]["template"],
        cluster["workerGroupSpecs"][0]["template"],
    ):
        assert template["metadata"]["labels"][PIPELINE_LABEL] == "digits"


def test_artifact_volume_mounted_in_head_and_workers():
    pods = pod_specs(make(RESOURCES["2-gpu-workers"]))
    for name in ("head", "worker"):
        spec = pods[name]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == ["trainpipe-artifacts"]
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert "/artifacts" in mounts
        assert spec["serviceAccountName"] == "trainpipe-jobs"


def test_pod_security_on_every_pod():
    for name, spec in pod_specs(make(RESOURCES["2-gpu-workers"])).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["runAsNonRoot"] is True, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_no_service_account_leaves_the_default():
    for spec in pod_specs(make(ResourcesSpec(), service_account=None)).values():
        assert "serviceAccountName" not in spec


@pytest.mark.parametrize(
    ("name", "owner", "storage", "match"),
    [
        ("Digits", OWNER, STORAGE, "not a valid RayJob name"),
        ("a" * 48, OWNER, STORAGE, "at most 47"),
        ("ok", {**OWNER, "uid": ""}, STORAGE, "missing uid"),
        ("ok", OWNER, {"claimName": "c"}, "mount path"),
        ("ok", OWNER, {"claimName": "c", "mountPath": "artifacts"}, "absolute"),
    ],
)
def test_refuses_what_kubernetes_or_kuberay_would(name, owner, storage, match):
    with pytest.raises(ValueError, match=match):
        build_rayjob(name, "ml", owner, "img", JOB_FILE, ResourcesSpec(), storage, None)


def test_build_does_not_share_mutable_parts():
    job = make(RESOURCES["cpu-only"])
    before = copy.deepcopy(job)
    job["metadata"]["labels"]["x"] = "y"
    assert (
        "x" not in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    )
    assert make(RESOURCES["cpu-only"]) == before


# --- status, as KubeRay writes it ------------------------------------------


def rayjob_with(status: dict | None) -> dict:
    obj = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "digits-baseline-1"}}
    if status is not None:
        obj["status"] = status
    return obj


def test_outcome_running():
    state = rayjob_outcome(
        rayjob_with(
            {
                "jobId": "digits-baseline-1-x7k2p",
                "rayClusterName": "digits-baseline-1-qz8vd",
                "dashboardURL": "digits-baseline-1-qz8vd-head-svc.ml.svc.cluster.local:8265",
                "jobStatus": "RUNNING",
                "jobDeploymentStatus": "Running",
                "startTime": "2026-01-10T09:00:00Z",
                "failed": 0,
                "succeeded": 0,
                "rayClusterStatus": {"state": "ready", "desiredWorkerReplicas": 2},
                "observedGeneration": 1,
            }
        )
    )
    assert (state.finished, state.succeeded, state.state) == (False, False, "RUNNING")
    assert state.exit_code is None
    assert state.job_id == "digits-baseline-1-x7k2p"
    assert state.ray_cluster == "digits-baseline-1-qz8vd"


def test_outcome_succeeded_complete():
    state = rayjob_outcome(
        rayjob_with(
            {
                "jobId": "digits-baseline-1-x7k2p",
                "jobStatus": "SUCCEEDED",
                "jobDeploymentStatus": "Complete",
                "message": "Job finished successfully.",
                "startTime": "2026-01-10T09:00:00Z",
                "endTime": "2026-01-10T09:12:41Z",
                "succeeded": 1,
                "failed": 0,
            }
        )
    )
    assert (state.finished, state.succeeded, state.state) == (True, True, "SUCCEEDED")
    assert state.message == "Job finished successfully."
    assert state.exit_code == 0


def test_outcome_failed():
    state = rayjob_outcome(
        rayjob_with(
            {
                "jobStatus": "FAILED",
                "jobDeploymentStatus": "Failed",
                "reason": "AppFailed",
                "message": "Job entrypoint command failed with exit code 1",
                "failed": 1,
                "succeeded": 0,
            }
        )
    )
    assert (state.finished, state.succeeded, state.state) == (True, False, "FAILED")
    assert state.message == "AppFailed: Job entrypoint command failed with exit code 1"
    assert state.failed_attempts == 1
    assert state.exit_code == 1


def test_outcome_stopped_is_resumable():
    state = rayjob_outcome(
        rayjob_with(
            {
                "jobStatus": "STOPPED",
                "jobDeploymentStatus": "Complete",
                "message": "Job was intentionally stopped.",
            }
        )
    )
    assert (state.finished, state.succeeded, state.state) == (True, False, "STOPPED")
    assert state.stopped and state.exit_code == 75


def test_outcome_initializing_without_job_status():
    state = rayjob_outcome(
        rayjob_with(
            {
                "jobId": "digits-baseline-1-x7k2p",
                "rayClusterName": "digits-baseline-1-qz8vd",
                "jobDeploymentStatus": "Initializing",
                "startTime": "2026-01-10T09:00:00Z",
                "failed": 0,
                "succeeded": 0,
            }
        )
    )
    assert (state.finished, state.succeeded, state.state) == (False, False, "Initializing")
    assert state.job_status == ""


def test_outcome_no_status_yet():
    state = rayjob_outcome(rayjob_with(None))
    assert (state.finished, state.succeeded, state.state, state.message) == (
        False,
        False,
        "New",
        "",
    )


@pytest.mark.parametrize(
    ("status", "finished", "state"),
    [
        (
            {
                "jobDeploymentStatus": "Failed",
                "jobStatus": "RUNNING",
                "reason": "DeadlineExceeded",
                "message": "The RayJob has passed the activeDeadlineSeconds.",
            },
            True,
            "Failed",
        ),
        (
            {
                "jobDeploymentStatus": "ValidationFailed",
                "reason": "ValidationFailed",
                "message": "The RayJob metadata is invalid",
            },
            True,
            "ValidationFailed",
        ),
        (
            {"jobDeploymentStatus": "Retrying", "jobStatus": "FAILED", "failed": 1},
            False,
            "Retrying",
        ),
        ({"jobDeploymentStatus": "Suspended"}, False, "Suspended"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, False, "PENDING"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, True, "SUCCEEDED"),
    ],
)
def test_outcome_other_states(status, finished, state):
    outcome = rayjob_outcome(rayjob_with(status))
    assert (outcome.finished, outcome.state) == (finished, state)
    assert outcome.succeeded == (finished and status.get("jobStatus") == "SUCCEEDED")
    if status.get("reason"):
        assert outcome.message.startswith(status["reason"])
