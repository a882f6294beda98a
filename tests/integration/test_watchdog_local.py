"""The hang watchdog on `trainpipe run` (the operator drives the same phase
machine): a training job that blocks before it begins to train is declared
hung after spec.gates.startTimeout; one whose data loader blocks after some
steps, once its heartbeat has not moved for spec.gates.stallTimeout; each
is stopped and resubmitted from its last checkpoint as the next attempt,
and the pipeline completes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.integration.local_tasks import REPO, run, state
from trainpipe_trainer.contract.evidence import Evidence

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALL_TASK = Path(__file__).parent / "stall_task"


def stalling_manifest(tmp_path: Path, marker: Path, **spec_extra: object) -> Path:
    manifest = yaml.safe_load((REPO / "examples" / "custom-task" / "pipeline.yaml").read_text())
    spec = manifest["spec"]
    spec["customTask"]["entrypoint"] = "stalling_task:StallingRegression"
    # ~280 training rows an epoch: the first attempt hangs in epoch 2, after epoch 1's checkpoint.
    spec["customTask"]["options"] = {"hidden": 32, "stallAfter": 400, "stallMarker": str(marker)}
    spec["data"]["source"] = str(REPO / "examples" / "custom-task" / "regression.csv")
    spec["gates"] = {"stallTimeout": "10s"}
    spec["baseline"]["epochs"] = 3
    spec["finalization"] = {"epochs": 2, "patience": 1, "export": ["torchscript"]}
    spec.update(spec_extra)
    path = tmp_path / "stall.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def run_stalling(path: Path, run_dir: Path):  # type: ignore[no-untyped-def]
    pythonpath = os.pathsep.join(filter(None, [str(STALL_TASK), os.environ.get("PYTHONPATH")]))
    return run(path, run_dir, env={"PYTHONPATH": pythonpath}, timeout=600)


def test_hung_jobs_are_stopped_resubmitted_from_their_checkpoint_and_the_pipeline_completes(tmp_path: Path) -> None:
    """Attempt 1 never begins to train; attempt 2 hangs in epoch 2; attempt 3
    resumes from epoch 1's checkpoint (spec.runtime.maxAttempts: 3)."""
    marker, start_marker = tmp_path / "stalled-once", tmp_path / "hung-before-training-once"
    run_dir = tmp_path / "run"
    manifest = stalling_manifest(tmp_path, marker)
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["customTask"]["options"]["startMarker"] = str(start_marker)
    # A healthy attempt reached its first step 4 s after submission on a quiet machine: 10x that.
    doc["spec"]["gates"]["startTimeout"] = "40s"
    manifest.write_text(yaml.safe_dump(doc))

    result = run_stalling(manifest, run_dir)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert start_marker.exists() and marker.exists()  # both hangs happened
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    baseline = run_dir / "02_baseline"
    attempts = json.loads((baseline / "watchdog.json").read_text())
    first, second, third = (next(s for s in attempts if s.endswith(f"-train-a{n}")) for n in (1, 2, 3))
    never_started = attempts[first]["stall"]
    assert never_started["timeoutField"] == "startTimeout" and never_started["globalStep"] is None, never_started
    assert never_started["silentSeconds"] >= 40, never_started  # rounded to 0.1 s in the record
    stall = attempts[second]["stall"]
    assert stall["timeoutField"] == "stallTimeout", stall
    assert stall["silentSeconds"] >= 10 and stall["completedEpochs"] == 1, stall
    assert "stall" not in attempts[third]
    output = (baseline / "job_output.log").read_text()
    assert all(f"--- {s}:" in output for s in (first, second, third))
    evidence = Evidence.read(baseline / "evidence.json")
    assert evidence.status == "completed" and evidence.resumed_from_epoch == 1  # from epoch 1's checkpoint
    assert [e.num for e in evidence.epochs] == [1, 2, 3]
    assert "without beginning to train" in result.stderr and "stalled: no heartbeat for" in result.stderr


def test_a_job_that_stalls_on_its_last_attempt_fails_the_phase_saying_so(tmp_path: Path) -> None:
    marker = tmp_path / "stalled-once"
    run_dir = tmp_path / "run"
    result = run_stalling(stalling_manifest(tmp_path, marker, runtime={"type": "local", "maxAttempts": 1}), run_dir)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the Baseline job stalled on attempt 1, the last of spec.runtime.maxAttempts (1)" in result.stderr
    assert "raise spec.gates.stallTimeout if its steps are only slow" in result.stderr
    status = state(run_dir)
    assert status.phase == "Baseline" and status.job.state == "STALLED" and status.job.reason == "Stalled"
    assert status.job.attempt == 1 and not (run_dir / "03_diagnostics").exists()
