"""`trainpipe run` stopped and continued: Ctrl-C mid-baseline and a rerun
match an uninterrupted run; and the Ray runtime, each phase a Ray job."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.local_pipelines import TRAINPIPE, manifest, run, state
from trainpipe_trainer.contract.evidence import Evidence

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ctrl_c_mid_baseline_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    spec = {"baseline": {"epochs": 4}}
    straight_dir = tmp_path / "straight"
    assert run(manifest(tmp_path, "straight", **spec), straight_dir).returncode == 0

    path = manifest(tmp_path, "interrupted", **spec)
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen([TRAINPIPE, "run", str(path), "--run-dir", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = run_dir / "02_baseline" / "logs" / "training.log"
    deadline = time.monotonic() + 300
    while not (log.exists() and "step 30 " in log.read_text()):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output[-3000:]
    interrupted = state(run_dir)
    assert interrupted.phase == "Baseline" and interrupted.job.state == "INTERRUPTED"

    again = run(path, run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = Evidence.read(run_dir / "02_baseline/evidence.json")
    reference = Evidence.read(straight_dir / "02_baseline/evidence.json")
    assert resumed.resumed_from_epoch is not None
    assert [(e.train_loss, e.val_loss) for e in resumed.epochs] == [(e.train_loss, e.val_loss) for e in reference.epochs]
    assert state(run_dir).phase == state(straight_dir).phase == "Succeeded"
    assert state(run_dir).metrics.test_acc == state(straight_dir).metrics.test_acc


def test_runtime_ray_submits_each_phase_as_a_ray_job(tmp_path: Path) -> None:
    """No address: the runner starts a local Ray head (token auth on), submits
    every phase's job through the Job Submission API, and stops the head."""
    run_dir = tmp_path / "ray"
    path = manifest(tmp_path, "ray-pipeline", runtime={"type": "ray"}, resources={"workers": 2})
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded"
    assert status.job.submission_id == f"ray-pipeline-{status.run_id}-05-finalization-evaluate-a1"
    baseline = Evidence.read(run_dir / "02_baseline/evidence.json")
    assert baseline.world_size == 2  # Ray Train ran two DDP workers inside the Ray job
    assert f"Running entrypoint for job ray-pipeline-{status.run_id}-02-baseline-train-a1" in (run_dir / "02_baseline/job_output.log").read_text()
