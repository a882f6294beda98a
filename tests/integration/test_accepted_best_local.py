"""`trainpipe run` of a pipeline that cannot reach its target (issue 11, part
5; seed 001: "accept best result, document performance ceiling, deploy"):
real training on the CPU, tiny epochs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.local_pipelines import TRAINPIPE, decisions, manifest, run, state

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_pipeline_that_accepts_its_best_documents_the_ceiling_and_succeeds(tmp_path: Path) -> None:
    run_dir = tmp_path / "ceiling"
    # The time budget spent at the first boundary: the shortest way to a best
    # result short of the target (the same path as diminishing returns or the
    # iterations used up: `status.acceptedBest`, then Finalization).
    path = manifest(tmp_path, "ceiling", target={"metric": "val_acc", "value": 0.9999},
                    baseline={"epochs": 2, "lr": 0.0005}, budget={"maxDuration": "1s"},
                    finalization={"epochs": 2, "patience": 2})
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded", (status.message, decisions(run_dir))
    assert status.accepted_best and "budget" in status.accepted_best, decisions(run_dir)
    assert decisions(run_dir)[-1] == ("Finalization", "gate-passed")
    target = next(c for c in status.gates["finalization"].checks if c.id == "target-met-on-test")
    test_acc = status.metrics.test_acc
    assert target.result == "warn" and test_acc is not None and target.value == round(test_acc, 6)
    assert "test split" in target.message
    condition = next(c for c in status.conditions if c.type == "TargetMet")
    assert (condition.status, condition.reason) == ("False", "AcceptedBest")
    ceiling = (run_dir / "05_finalization/performance_ceiling.md").read_text()
    assert "0.9999" in ceiling and f"{test_acc:.4f}".rstrip("0") in ceiling and "02_baseline" in ceiling
    documented = next(c for c in status.gates["finalization"].checks if c.id == "ceiling-documented")
    assert documented.result == "pass", documented.message
    assert (run_dir / "05_finalization/model.onnx").exists()

    late = subprocess.run([TRAINPIPE, "approve", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert late.returncode == 2 and "not AwaitingApproval" in late.stderr
