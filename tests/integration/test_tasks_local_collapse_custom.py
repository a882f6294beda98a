"""`trainpipe run` beyond the happy path of the tasks: a VAE configured to
collapse is caught at the post-baseline gate, diagnosed, and the baseline
runs again with the fix; a task defined outside trainpipe
(examples/custom-task) goes through every phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.local_tasks import REPO, check, run, state, vae_manifest
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_collapsing_vae_fails_the_posterior_collapse_check_and_is_diagnosed(tmp_path: Path) -> None:
    run_dir = tmp_path / "collapse"
    path = vae_manifest(tmp_path, "collapse", vae={"beta": 200.0, "freeBits": 0.0, "klAnneal": {"schedule": "none"}},
                        baseline={"epochs": 4}, optimization={"maxIterations": 1}, budget={"maxDuration": "20m"},
                        finalization={"epochs": 2})
    run(path, run_dir)
    # The first baseline's own gate record: the status keeps only the latest
    # attempt, which runs with the diagnosis' fix.
    first_gate = json.loads((run_dir / "02_baseline" / "gate.json").read_text())
    first = next(c for c in first_gate["checks"] if c["id"] == "posterior-collapse")
    assert first["result"] == "fail" and "posterior collapse" in first["message"], first
    report = (run_dir / "03_diagnostics" / "iter_1" / "diagnostic_report.md").read_text()
    assert "posterior-collapse" in report
    assert report.index("warm") < report.index("beta") or report.index("free bits") < report.index("beta")
    decisions = [(d.phase, d.decision) for d in state(run_dir).decisions]
    assert ("Baseline", "fix") in decisions and ("Diagnostics", "baseline-again") in decisions, decisions


def test_a_task_defined_outside_trainpipe_runs_every_phase(tmp_path: Path) -> None:
    run_dir = tmp_path / "custom"
    result = run(REPO / "examples" / "custom-task" / "pipeline.yaml", run_dir,
                 env={"PYTHONPATH": str(REPO / "examples" / "custom-task")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    assert status.metrics.target_metric == "val_mse"
    assert check(status, "finalization", "target-met-on-test").result in ("pass", "warn")
    assert Evidence.read(run_dir / "02_baseline/evidence.json").task == "custom"
    assert ExportReport.read(run_dir / "05_finalization/export.json").ok
