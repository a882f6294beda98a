"""The operator's jobs on a real Ray head, as the Helm chart's ServiceAccount
on a real kube-apiserver + etcd: a killed operator re-attaches instead of
submitting again, a stopped job is resubmitted and resumes, deleting a
pipeline stops its job, and the KubeRay RayJob runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainpipe_trainer.contract.evidence import Evidence

from .operator_harness import (
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    baseline_running_with_an_epoch,
    get,
    kubectl,
    phase_of,
    pipeline_manifest,
    submissions,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ray_state(cluster: Cluster, submission: str) -> str:
    job = next(j for j in cluster.ray_jobs() if j.submission_id == submission)
    return str(getattr(job.status, "value", job.status))


def test_a_killed_operator_reattaches_to_its_running_job_instead_of_submitting_again(
        cluster: Cluster, tmp_path: Path) -> None:
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path).start()
    name = "killed-operator"
    # 6 epochs: the kill lands after the first, and the next operator takes
    # 10-15 s to start on a busy machine (measured): with fewer epochs it
    # found the job already finished instead of running.
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, baseline={"epochs": 6}))
    wait_for("the baseline's first epoch", lambda: baseline_running_with_an_epoch(cluster, name), timeout=300)
    operator.kill()
    running = get(cluster.admin, name)["status"]["job"]["submissionId"]
    assert ray_state(cluster, running) == "RUNNING"  # the operator died with its job running
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path).start()
    try:
        obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=600)
    finally:
        operator.stop()
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    uid = obj["metadata"]["uid"]
    jobs = submissions(cluster, f"{name}-{uid}")
    assert len(jobs) == len(set(jobs))
    baseline_jobs = [j for j in jobs if "-02-baseline-train-" in j]
    assert baseline_jobs == [f"{name}-{uid}-02-baseline-train-a1"]  # exactly one submission
    evidence = Evidence.read(cluster.run_dir(name) / "02_baseline" / "evidence.json")
    assert evidence.resumed_from_epoch is None and len(evidence.epochs) == 6  # it kept running, not restarted


def test_a_stopped_ray_job_is_resubmitted_and_resumes_from_its_checkpoint(
        cluster: Cluster, operator: OperatorProcess) -> None:
    name = "stopped-job"
    # 4 epochs: the stop lands after the first, with 3 left (a job that had
    # finished first would not be resubmitted: the asserts below would fail).
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, baseline={"epochs": 4}))
    wait_for("the baseline's first epoch", lambda: baseline_running_with_an_epoch(cluster, name), timeout=300)
    submission = get(cluster.admin, name)["status"]["job"]["submissionId"]
    cluster.ray_client().stop_job(submission)
    obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=600)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    evidence = Evidence.read(cluster.run_dir(name) / "02_baseline" / "evidence.json")
    assert evidence.resumed_from_epoch is not None and evidence.resumed_from_epoch > 0
    assert [e.num for e in evidence.epochs] == list(range(1, 5))
    assert submission.endswith("-a1")
    assert f"{submission[:-3]}-a2" in submissions(cluster, submission[:-3])


def test_deleting_a_running_pipeline_stops_its_ray_job_then_lets_go(
        cluster: Cluster, operator: OperatorProcess) -> None:
    name = "deleted"
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, baseline={"epochs": 30}))
    wait_for("the baseline's first epoch", lambda: baseline_running_with_an_epoch(cluster, name), timeout=300)
    submission = get(cluster.admin, name)["status"]["job"]["submissionId"]
    kubectl(cluster.admin, "delete", "tp", name, "--wait=true", "--timeout=180s")
    gone = kubectl(cluster.admin, "get", "tp", name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr

    def stopped() -> bool:
        job = next(j for j in cluster.ray_jobs() if j.submission_id == submission)
        return str(getattr(job.status, "value", job.status)) == "STOPPED"

    wait_for(f"Ray job {submission} stopped", stopped, timeout=120)


def test_runtime_rayjob_creates_kuberay_rayjobs_and_follows_their_status(
        cluster: Cluster, operator: OperatorProcess) -> None:
    """KubeRay's controller does not run here: the test plays it. Each RayJob
    the operator creates is checked against the RayJob CRD's schema (KubeRay's
    own where it is found, else the project's cut of it: the test runs on any
    clone), its entrypoint is run for real on this machine, and its status is
    written back as KubeRay writes it; the operator follows it to Succeeded.
    The operator's peak memory stays within the chart's default limit."""
    import shlex
    import subprocess
    import sys
    import time

    from kubernetes import client, config

    from trainpipe_operator.kuberay.schema import validate_against_kuberay

    started = time.monotonic()
    api = client.CustomObjectsApi(config.new_client_from_config(str(cluster.admin)))
    name = "on-kuberay"
    manifest = pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET)
    manifest["spec"]["runtime"] = {"type": "rayjob"}
    # CPU only: a pipeline that asks for GPUs fails Planning's preflight on a
    # machine without one (tests/unit/test_rayjob.py renders GPU limits).
    manifest["spec"]["resources"] = {"workers": 2, "gpusPerWorker": 0}
    apply(cluster.admin, manifest)
    handled: set[str] = set()

    def play_kuberay() -> str | None:
        phase = phase_of(cluster, name)
        if phase in ("Succeeded", "Failed"):
            return phase
        jobs = api.list_namespaced_custom_object("ray.io", "v1", "default", "rayjobs",
                                                 label_selector=f"trainpipe.io/pipeline={name}")["items"]
        for job in jobs:
            job_name = job["metadata"]["name"]
            if job_name in handled:
                continue
            handled.add(job_name)
            assert validate_against_kuberay(job, cluster.rayjob_crd) == [], (job_name, str(cluster.rayjob_crd))
            workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
            assert workers["replicas"] == 2
            limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert "nvidia.com/gpu" not in limits
            assert job["metadata"]["ownerReferences"][0]["name"] == name
            command = shlex.split(job["spec"]["entrypoint"])
            assert command[1:3] == ["-m", "trainpipe_trainer.run"]
            config_path = Path(command[command.index("--config") + 1])
            # Here the job runs without Ray (KubeRay's cluster is not here) and on the CPU.
            done = subprocess.run([sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config_path),
                                   "--no-ray"], capture_output=True, text=True, timeout=600,
                                  env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
            job_status = "SUCCEEDED" if done.returncode == 0 else "FAILED"
            api.patch_namespaced_custom_object_status("ray.io", "v1", "default", "rayjobs", job_name, {
                "status": {"jobStatus": job_status, "jobDeploymentStatus": "Complete" if done.returncode == 0
                           else "Failed", "message": f"entrypoint exited {done.returncode}"}})
        return None

    final = wait_for(f"{name} via RayJobs", play_kuberay, timeout=900, interval=2)
    status = get(cluster.admin, name)["status"]
    assert final == "Succeeded", status.get("message")
    assert len(handled) >= 4  # planning, baseline, final training, evaluation
    gpu = next(c for c in status["gates"]["baseline"]["checks"] if c["id"] == "gpu-utilization")
    assert (gpu["result"], gpu["value"]) == ("skip", "not-applicable")  # no GPU requested: never a pass
    peak, cpu_seconds = operator.resource_use()
    limit = chart_memory_limit()
    print(f"operator: peak RSS {peak / 2**20:.0f} MiB, {cpu_seconds:.1f} CPU s over "
          f"{time.monotonic() - started:.0f} s ({len(handled)} RayJobs)")
    assert peak < 0.8 * limit, f"peak RSS {peak / 2**20:.0f} MiB is near the chart's limit {limit / 2**20:.0f} MiB"


def chart_memory_limit() -> int:
    """The chart's default memory limit for the operator, in bytes."""
    import yaml

    from tests.chart_render import CHART

    text = str(yaml.safe_load((CHART / "values.yaml").read_text())["resources"]["limits"]["memory"])
    units = {"Mi": 2**20, "Gi": 2**30}
    return int(float(text[:-2]) * units[text[-2:]])
