"""Progress, ETA and the hang watchdog under the operator (a real API server
and Ray head): while a job runs, status.progress and the Progress and ETA
printer columns, `trainpipe status NAME` and the progress gauges say where
it stands; a Ray job whose data loader hangs (first attempt only) is
declared Stalled, stopped, resubmitted from its checkpoint as attempt 2 (an
Event, trainpipe_operator_job_stalls_total), and the pipeline completes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainpipe_operator.devcluster import RayHead
from trainpipe_trainer.contract.evidence import Evidence

from .operator_harness import (
    TOKEN_SECRET,
    TRAINPIPE,
    Cluster,
    OperatorProcess,
    apply,
    get,
    kubectl,
    pipeline_manifest,
    submissions,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STALL_TASK = Path(__file__).parent / "stall_task"


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """This module's head runs jobs that can import the stalling test task."""
    pythonpath = os.pathsep.join(filter(None, [str(STALL_TASK), os.environ.get("PYTHONPATH")]))
    with RayHead(tmp_path_factory.mktemp("ray-head"), env={"PYTHONPATH": pythonpath}) as head:
        yield head


def _progress(cluster: Cluster, name: str) -> dict[str, Any]:
    return (get(cluster.admin, name).get("status") or {}).get("progress") or {}


def test_progress_in_status_columns_and_cli_and_a_hung_ray_job_restarted_from_its_checkpoint(
        cluster: Cluster, operator: OperatorProcess, tmp_path: Path) -> None:
    name = "stalling"
    (cluster.artifact_root / "default").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "custom-task" / "regression.csv", cluster.artifact_root / "default")
    marker = tmp_path / "stalled-once"
    manifest = pipeline_manifest(
        name, cluster.ray_address, TOKEN_SECRET,
        task="custom",
        customTask={"entrypoint": "stalling_task:StallingRegression",
                    "options": {"hidden": 32, "stallAfter": 400, "stallMarker": str(marker)},
                    "metrics": [{"name": "val_mse", "direction": "minimize", "kind": "loss"},
                                {"name": "test_mse", "direction": "minimize", "kind": "loss"}]},
        model={"name": "mlp"}, data={"source": "regression.csv", "batchSize": 32},
        target={"metric": "val_mse", "value": 0.05}, baseline={"epochs": 4, "lr": 0.01, "scheduler": "none"},
        optimization={"maxIterations": 1}, finalization={"epochs": 2, "patience": 1, "export": ["torchscript"]},
        gates={"stallTimeout": "10s"})
    manifest["spec"]["data"].pop("imageSize", None)
    apply(cluster.admin, manifest)

    # The first attempt hangs after epoch 1: its progress holds while the watchdog waits.
    wait_for("progress Baseline 1/4", lambda: _progress(cluster, name).get("summary") == "Baseline 1/4", timeout=300,
             interval=0.5)
    table = kubectl(cluster.admin, "get", "tp", name).stdout
    header, row = table.splitlines()[:2]
    assert "PROGRESS" in header and "ETA" in header and "Baseline 1/4" in row, table
    progress = _progress(cluster, name)
    assert progress["epochs"] == 4 and progress["eta"] and progress["pipelineEtaSeconds"] >= progress["jobEtaSeconds"]
    gauge = f'trainpipe_operator_pipeline_epoch{{namespace="default",phase="Baseline",pipeline="{name}"}} 1.0'
    assert gauge in operator.metrics()
    shown = subprocess.run([TRAINPIPE, "status", name, "-n", "default"], capture_output=True, text=True,
                           env={**os.environ, "KUBECONFIG": str(cluster.admin)}, timeout=60)
    assert "progress: Baseline 1/4" in shown.stdout, shown.stdout + shown.stderr

    # Stalled: attempt 2, resumed from epoch 1's checkpoint.
    def resubmitted() -> dict | None:
        job = (get(cluster.admin, name).get("status") or {}).get("job") or {}
        return job if job.get("reason") == "Stalled" else None

    job = wait_for("the Stalled resubmission", resubmitted, timeout=180, interval=0.5)
    assert job["attempt"] == 2 and job["submissionId"].endswith("-02-baseline-train-a2"), job
    assert "stalled: no heartbeat for" in job["message"]

    obj = wait_phase(cluster, operator, name, ("Succeeded", "Failed"), timeout=600)
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("message")
    assert "progress" not in obj["status"]  # nothing runs any more
    assert marker.exists()
    uid = obj["metadata"]["uid"]
    jobs = submissions(cluster, f"{name}-{uid}-02-baseline-train")
    assert [j[-2:] for j in jobs] == ["a1", "a2"]
    evidence = Evidence.read(cluster.run_dir(name) / "02_baseline" / "evidence.json")
    assert evidence.status == "completed" and evidence.resumed_from_epoch == 1
    events = json.loads(kubectl(cluster.admin, "get", "events", "-n", "default", "--field-selector",
                                f"involvedObject.name={name},reason=Stalled", "-o", "json").stdout)["items"]
    assert len(events) == 1 and events[0]["type"] == "Warning" and "-train-a1 stalled" in events[0]["message"]
    assert 'trainpipe_operator_job_stalls_total{runtime="ray"} 1.0' in operator.metrics()
