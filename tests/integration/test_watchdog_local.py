"""The hang watchdog on `trainpipe run` (the operator drives the same phase
machine): a training job whose data loader blocks after some steps, on its
first attempt only, is declared hung once its heartbeat has not moved for
spec.gates.stallTimeout, stopped, resubmitted from its last checkpoint as
attempt 2, and the pipeline completes."""

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


def test_a_hung_job_is_stopped_resubmitted_from_its_checkpoint_and_the_pipeline_completes(tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO / "examples" / "custom-task" / "pipeline.yaml").read_text())
    marker = tmp_path / "stalled-once"
    spec = manifest["spec"]
    spec["customTask"]["entrypoint"] = "stalling_task:StallingRegression"
    # ~280 training rows an epoch: the first attempt hangs in epoch 2, after epoch 1's checkpoint.
    spec["customTask"]["options"] = {"hidden": 32, "stallAfter": 400, "stallMarker": str(marker)}
    spec["data"]["source"] = str(REPO / "examples" / "custom-task" / "regression.csv")
    spec["gates"] = {"stallTimeout": "10s"}
    spec["baseline"]["epochs"] = 3
    spec["finalization"] = {"epochs": 2, "patience": 1, "export": ["torchscript"]}
    path = tmp_path / "stall.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run_dir = tmp_path / "run"

    pythonpath = os.pathsep.join(filter(None, [str(STALL_TASK), os.environ.get("PYTHONPATH")]))
    result = run(path, run_dir, env={"PYTHONPATH": pythonpath}, timeout=600)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marker.exists()  # the first attempt did hang
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    baseline = run_dir / "02_baseline"
    attempts = json.loads((baseline / "watchdog.json").read_text())
    first = next(s for s in attempts if s.endswith("-train-a1"))
    second = next(s for s in attempts if s.endswith("-train-a2"))
    stall = attempts[first]["stall"]
    assert stall["silentSeconds"] > 10 and stall["completedEpochs"] == 1, stall
    assert "stall" not in attempts[second]
    output = (baseline / "job_output.log").read_text()
    assert f"--- {first}:" in output and f"--- {second}:" in output
    evidence = Evidence.read(baseline / "evidence.json")
    assert evidence.status == "completed" and evidence.resumed_from_epoch == 1  # from epoch 1's checkpoint
    assert [e.num for e in evidence.epochs] == [1, 2, 3]
    assert "stalled: no heartbeat for" in result.stderr  # said while it ran
