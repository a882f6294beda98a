"""spec.runtime.queueName on the RayJob runtime, against a real
kube-apiserver with the RayJob CRD. Neither Kueue nor KubeRay runs here: the
test plays both (Kueue admits a RayJob by setting its spec.suspend to false;
KubeRay writes its status). A queued RayJob has the shape Kueue's RayJob
integration requires and holds the pipeline in WaitingForAdmission (not
budget); spec.suspend deletes it (freeing the queue's quota) and resuming
queues the next attempt; the finished pipeline's RayJobs go after
spec.ttlSecondsAfterFinished, and it starts no job again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from trainpipe_operator.kuberay.queue import QUEUE_LABEL, kueue_problems
from trainpipe_operator.kuberay.schema import validate_against_kuberay

from .operator_harness import (
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    get,
    kubectl,
    pipeline_manifest,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration]


def test_a_queued_rayjob_waits_for_admission_suspends_resumes_and_is_cleaned_up(
        cluster: Cluster, operator: OperatorProcess) -> None:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.admin)))
    name = "queued"
    manifest = pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, ttlSecondsAfterFinished=0)
    manifest["spec"]["runtime"] = {"type": "rayjob", "queueName": "team-a"}
    manifest["spec"]["resources"] = {"workers": 1, "gpusPerWorker": 0}
    apply(cluster.admin, manifest)

    def rayjobs() -> list[dict[str, Any]]:
        return api.list_namespaced_custom_object("ray.io", "v1", "default", "rayjobs",
                                                 label_selector=f"trainpipe.io/pipeline={name}")["items"]

    def hold() -> str | None:
        return ((get(cluster.admin, name).get("status") or {}).get("suspension") or {}).get("state")

    (job,) = wait_for("the queued RayJob", lambda: rayjobs() or None, timeout=120)
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["spec"]["suspend"] is True and job["spec"]["shutdownAfterJobFinishes"] is True
    assert kueue_problems(job) == []
    assert validate_against_kuberay(job, cluster.rayjob_crd) == [], str(cluster.rayjob_crd)
    wait_for("WaitingForAdmission", lambda: hold() == "WaitingForAdmission", timeout=60)
    obj = get(cluster.admin, name)
    admitted = next(c for c in obj["status"]["conditions"] if c["type"] == "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "WaitingForAdmission")
    assert "waits for admission" in obj["status"]["message"]
    assert "WaitingForAdmission" in kubectl(cluster.admin, "get", "tp", name).stdout

    # Suspended while queued: the RayJob goes (Kueue frees its quota); no other is created.
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    wait_for("Suspended without a RayJob", lambda: hold() == "Suspended" and not rayjobs(), timeout=60)
    assert get(cluster.admin, name)["status"]["phase"] == "Planning"
    first = job["metadata"]["name"]
    assert get(cluster.admin, name)["status"]["suspension"]["stoppedJobs"][0].endswith("-a1")

    # Resumed: the next attempt is queued again.
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    (job,) = wait_for("the next queued RayJob", lambda: rayjobs() or None, timeout=60)
    assert job["metadata"]["name"] != first and job["spec"]["suspend"] is True
    wait_for("WaitingForAdmission again", lambda: hold() == "WaitingForAdmission", timeout=60)
    assert get(cluster.admin, name)["status"]["job"]["submissionId"].endswith("-a2")

    # Kueue admits it: the pipeline runs, and the time it waited is held time, not budget.
    api.patch_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", job["metadata"]["name"],
                                       {"spec": {"suspend": False}})
    wait_for("admitted", lambda: hold() is None, timeout=60)
    status = get(cluster.admin, name)["status"]
    assert status["suspension"]["heldSeconds"] > 0 and "waits for admission" not in status["message"]

    # KubeRay: the job failed; Planning's gate fails; the TTL (0) removes the RayJobs.
    api.patch_namespaced_custom_object_status("ray.io", "v1", "default", "rayjobs", job["metadata"]["name"], {
        "status": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "message": "entrypoint exited 1"}})
    obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=120)
    assert obj["status"]["phase"] == "Failed"
    wait_for("the cleanup", lambda: (get(cluster.admin, name)["status"].get("cleanup") or {}).get("doneAt"),
             timeout=60)
    assert rayjobs() == []
    assert get(cluster.admin, name)["status"]["cleanup"]["removed"] == [f"RayJob default/{job['metadata']['name']}"]
    assert (cluster.run_dir(name) / "pipeline.yaml").exists()  # the record stays

    # A finished pipeline never starts a job again, whatever its spec becomes.
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p",
            '{"spec": {"baseline": {"epochs": 3}, "ttlSecondsAfterFinished": 1}}')
    time.sleep(5 * operator.poll_seconds)  # what a restarted pipeline would have created by now
    assert rayjobs() == [] and get(cluster.admin, name)["status"]["phase"] == "Failed"
