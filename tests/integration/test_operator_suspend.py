"""spec.suspend on the Ray Job API runtime, against a real kube-apiserver and
Ray head: `trainpipe suspend` stops the running job at a checkpoint and holds
the pipeline (Suspended, with its phase and epoch; no job starts; the time
held is not budget); `trainpipe resume` continues the same phase from that
checkpoint, with the same losses as a run that never stopped. Then
spec.ttlSecondsAfterFinished removes the finished pipeline's Ray jobs, and
an edited finished pipeline starts none. A pipeline created suspended waits."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainpipe_trainer.contract.evidence import Evidence

from .operator_harness import (
    TOKEN_SECRET,
    TRAINPIPE,
    Cluster,
    OperatorProcess,
    apply,
    baseline_running_with_an_epoch,
    get,
    kubectl,
    pipeline_manifest,
    submissions,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINPIPE, *args, "-n", "default", "--kubeconfig", str(cluster.admin)],
                          capture_output=True, text=True, timeout=60)


def suspension(cluster: Cluster, name: str) -> dict[str, Any]:
    return (get(cluster.admin, name).get("status") or {}).get("suspension") or {}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == kind), None)


def ray_state(cluster: Cluster, submission: str) -> str:
    job = next(j for j in cluster.ray_jobs() if j.submission_id == submission)
    return str(getattr(job.status, "value", job.status))


def reference_run(cluster: Cluster, job_request: Path, run_dir: Path) -> Evidence:
    """The same baseline job, never stopped, on the same Ray head."""
    config = yaml.safe_load(job_request.read_text())
    config["runDir"] = str(run_dir)
    config.pop("tracking", None)
    path = run_dir.parent / "reference_job.yaml"
    path.write_text(yaml.safe_dump(config))
    client = cluster.ray_client()
    submission = client.submit_job(entrypoint=f"python -m trainpipe_trainer.run --config {path}")
    wait_for("the reference job", lambda: str(client.get_job_status(submission)) in
             ("JobStatus.SUCCEEDED", "JobStatus.FAILED", "SUCCEEDED", "FAILED"), timeout=600, interval=2)
    return Evidence.read(run_dir / "evidence.json")


def test_suspend_holds_at_a_checkpoint_and_resume_continues_exactly_then_the_ttl_cleans_up(
        cluster: Cluster, operator: OperatorProcess, tmp_path: Path) -> None:
    missing = cli(cluster, "suspend", "no-such-pipeline")
    assert missing.returncode == 1 and "no TrainingPipeline 'no-such-pipeline' in namespace 'default'" in \
        missing.stderr

    name = "suspended"
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, baseline={"epochs": 6}))
    wait_for("the baseline's first epoch", lambda: baseline_running_with_an_epoch(cluster, name), timeout=300)
    first = get(cluster.admin, name)["status"]["job"]["submissionId"]
    done = cli(cluster, "suspend", name)
    assert done.returncode == 0, done.stderr

    held = wait_for("Suspended", lambda: suspension(cluster, name).get("state") == "Suspended"
                    and get(cluster.admin, name), timeout=300)
    status = held["status"]
    assert status["phase"] == "Baseline", status["message"]
    assert status["suspension"]["phase"] == "Baseline" and status["suspension"]["epoch"] >= 1
    assert first in status["suspension"]["stoppedJobs"]
    assert ray_state(cluster, first) == "STOPPED"  # its stop request: the trainer checkpointed and ended
    assert (condition(held, "Suspended") or {}).get("status") == "True"
    assert "Suspended" in kubectl(cluster.admin, "get", "tp", name).stdout  # the printer column
    run_dir = cluster.run_dir(name)
    stopped = Evidence.read(run_dir / "02_baseline" / "evidence.json")
    assert stopped.status == "interrupted" and len(stopped.epochs) == status["suspension"]["epoch"]

    # While it is held, nothing is submitted (the same Ray head runs the reference meanwhile).
    reference = reference_run(cluster, run_dir / "02_baseline" / "job_request.yaml", tmp_path / "reference")
    assert submissions(cluster, first[:-3]) == [first]
    assert suspension(cluster, name).get("state") == "Suspended"

    done = cli(cluster, "resume", name)
    assert done.returncode == 0, done.stderr
    obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=600)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    resumed = Evidence.read(run_dir / "02_baseline" / "evidence.json")
    assert resumed.resumed_from_epoch == held["status"]["suspension"]["epoch"]
    assert [e.num for e in resumed.epochs] == list(range(1, 7))
    assert [(e.train_loss, e.val_loss) for e in resumed.epochs] == \
        [(e.train_loss, e.val_loss) for e in reference.epochs]
    # The resumed job is the next submission; the stopped one did not count as a failed attempt.
    assert submissions(cluster, first[:-3]) == [first, f"{first[:-3]}-a2"]
    assert status["suspension"].get("state") is None and status["suspension"]["heldSeconds"] > 0
    assert (condition(obj, "Suspended") or {}).get("status") == "False"

    # ttlSecondsAfterFinished, set on the finished pipeline: its Ray jobs go, the record stays.
    uid = obj["metadata"]["uid"]
    assert submissions(cluster, f"{name}-{uid}-")
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p", '{"spec": {"ttlSecondsAfterFinished": 0}}')
    wait_for("the cleanup", lambda: (get(cluster.admin, name)["status"].get("cleanup") or {}).get("doneAt"),
             timeout=120)
    assert submissions(cluster, f"{name}-{uid}-") == []
    cleanup = get(cluster.admin, name)["status"]["cleanup"]
    assert any(first in r for r in cleanup["removed"])
    assert (run_dir / "02_baseline" / "evidence.json").exists() and (run_dir / "state.json").exists()

    # A finished pipeline never starts a job again, whatever its spec becomes.
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p",
            '{"spec": {"baseline": {"epochs": 7}, "suspend": true, "ttlSecondsAfterFinished": 5}}')
    kubectl(cluster.admin, "patch", "tp", name, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    time.sleep(5 * operator.poll_seconds)  # what a restarted pipeline would have submitted by now
    after = get(cluster.admin, name)
    assert after["metadata"]["generation"] > obj["metadata"]["generation"]
    assert after["status"]["phase"] == "Succeeded" and submissions(cluster, f"{name}-{uid}-") == []


def test_a_pipeline_created_suspended_waits_without_a_job(cluster: Cluster, operator: OperatorProcess) -> None:
    name = "created-suspended"
    apply(cluster.admin, pipeline_manifest(name, cluster.ray_address, TOKEN_SECRET, suspend=True))
    obj = wait_for("Suspended", lambda: suspension(cluster, name).get("state") == "Suspended"
                   and get(cluster.admin, name), timeout=120)
    assert obj["status"]["phase"] == "Pending" and not obj["status"].get("startedAt")
    assert (condition(obj, "Suspended") or {}).get("reason") == "Suspended"
    uid = obj["metadata"]["uid"]
    assert submissions(cluster, f"{name}-{uid}") == []
    kubectl(cluster.admin, "delete", "tp", name, "--wait=true", "--timeout=60s")
