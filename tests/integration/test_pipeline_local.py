"""`trainpipe run` on this machine, real training on the CPU: the phase
machine, every gate and the decisions the seeds describe. (Resuming and the
Ray runtime: test_pipeline_local_resume.py.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.local_pipelines import REPO, TRAINPIPE, decisions, manifest, run, state
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def digits_example_kept_small(tmp_path: Path) -> Path:
    """examples/digits.yaml with its model held at smallcnn and one
    optimization iteration: the same path through every phase (its short,
    slow-learning baseline still goes through Diagnostics and Optimization),
    without the resnet18 that Diagnostics recommends: its 9 epochs took most
    of this test's minutes on 2 CPU cores."""
    example = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    example["spec"]["optimization"].update(maxIterations=1, fixed=["model.name"])
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(example))
    return path


def test_examples_digits_runs_every_phase_to_succeeded(tmp_path: Path) -> None:
    run_dir = tmp_path / "digits"
    result = run(digits_example_kept_small(tmp_path), run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded"
    assert [p for p, _ in decisions(run_dir)] == [
        "Pending", "Planning", "Baseline", "Diagnostics", "Optimization", "Finalization"]
    expected = [
        "pipeline.yaml", "state.json", "summary.md",
        "01_planning/training_config.yaml", "01_planning/environment.json", "01_planning/data_report.json",
        "01_planning/preflight.json", "01_planning/reproducibility_gate.md", "01_planning/gate.json",
        "02_baseline/logs/training.log", "02_baseline/logs/metrics.json", "02_baseline/checkpoints/best_model.pt",
        "02_baseline/checkpoints/last_model.pt", "02_baseline/checkpoints/checkpoint_epoch_3.pt",
        "02_baseline/baseline_results.md", "02_baseline/learning_curves.png", "02_baseline/evidence.json",
        "02_baseline/gate.json",
        "03_diagnostics/iter_1/diagnostic_report.md", "03_diagnostics/iter_1/gate.json",
        "04_optimization/iter_1/optimization_config.yaml", "04_optimization/iter_1/optimization_results.md",
        "04_optimization/iter_1/evidence.json", "04_optimization/iter_1/gate.json",
        "05_finalization/test_results.md", "05_finalization/confusion_matrix.png", "05_finalization/model.onnx",
        "05_finalization/deployment_guide.md", "05_finalization/production_ready.md", "05_finalization/gate.json",
    ]
    missing = [name for name in expected if not (run_dir / name).exists()]
    assert not missing, missing
    assert (run_dir / "05_finalization/model.pt2").exists() or (run_dir / "05_finalization/model.ts").exists()
    export = ExportReport.read(run_dir / "05_finalization/export.json")
    onnx_parity = next(p for p in export.parity if p.runtime == "onnxruntime")
    assert onnx_parity.max_abs_diff is not None and onnx_parity.max_abs_diff <= 1e-4
    assert onnx_parity.top1_agree_all
    parity_check = next(c for c in status.gates["finalization"].checks if c.id == "export-parity")
    assert parity_check.result == "pass" and parity_check.value is not None
    assert "max abs diff" in (run_dir / "05_finalization/deployment_guide.md").read_text()
    assert status.metrics.test_acc is not None and status.metrics.test_acc > 0.9
    summary = (run_dir / "summary.md").read_text()
    assert "Succeeded" in summary and "05_finalization/gate_report.md" in summary
    shown = subprocess.run([TRAINPIPE, "status", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "phase: Succeeded" in shown.stdout and "export-parity" in shown.stdout


def test_a_target_met_at_baseline_skips_diagnostics_and_waits_for_approval(tmp_path: Path) -> None:
    run_dir = tmp_path / "fast"
    # approval and the reproducibility check come from --set, not the file
    path = manifest(tmp_path, "fast")
    result = run(path, run_dir, "--set", "approval.required=true", "--set", "gates.reproducibility=true")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = yaml.safe_load((run_dir / "pipeline.yaml").read_text())["spec"]
    assert recorded["approval"]["required"] is True and recorded["gates"]["reproducibility"] is True
    # the run directory holds the resolved spec: the file alone is a different spec
    again = run(path, run_dir)
    assert again.returncode == 2 and "different spec" in again.stderr
    assert decisions(run_dir) == [("Pending", "start"), ("Planning", "gate-passed"),
                                  ("Baseline", "deploy-baseline"), ("Finalization", "await-approval")]
    assert not (run_dir / "03_diagnostics").exists() and not (run_dir / "04_optimization").exists()
    assert state(run_dir).phase == "AwaitingApproval"
    reproducible = next(c for c in state(run_dir).gates["baseline"].checks if c.id == "reproducible")
    assert reproducible.result == "pass", reproducible.message  # the same seed, the same losses on CPU
    assert (run_dir / "02_baseline/reproducibility/evidence.json").exists()

    approved = subprocess.run([TRAINPIPE, "approve", str(run_dir), "--by", "test"], capture_output=True,
                              text=True, timeout=120)
    assert approved.returncode == 0, approved.stderr
    final = state(run_dir)
    assert final.phase == "Succeeded"
    assert next(c for c in final.gates["finalization"].checks if c.id == "approval").result == "pass"
    assert final.decisions[-1].decision == "approved"


def test_a_diverging_lr_is_diagnosed_as_nan_loss_and_the_next_baseline_lowers_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "diverge"
    path = manifest(tmp_path, "diverge", baseline={"lr": 10, "optimizer": "sgd", "gradClipNorm": None})
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert decisions(run_dir)[2:5] == [("Baseline", "fix"), ("Diagnostics", "baseline-again"),
                                       ("Baseline", "deploy-baseline")]
    report = (run_dir / "03_diagnostics/iter_1/diagnostic_report.md").read_text()
    assert "nan-loss" in report
    first = yaml.safe_load((run_dir / "02_baseline/job.yaml").read_text())["train"]
    second = yaml.safe_load((run_dir / "02_baseline_attempt_2/job.yaml").read_text())["train"]
    assert first["lr"] == 10 and second["lr"] < first["lr"]
    assert second["gradClipNorm"] is not None
    assert Evidence.read(run_dir / "02_baseline/evidence.json").status == "failed"


def test_train_val_copies_are_blocked_at_planning(tmp_path: Path) -> None:
    from trainpipe_trainer.data.digits import ensure_builtin_digits

    digits = ensure_builtin_digits(tmp_path / "cache")
    data = tmp_path / "leaky"
    for split in ("train", "val", "test"):
        for cls in ("0", "1"):
            (data / split / cls).mkdir(parents=True)
    for cls in ("0", "1"):
        files = sorted((digits / cls).glob("*.png"))
        for f in files[:30]:
            shutil.copy(f, data / "train" / cls / f.name)
        for f in files[30:36]:
            shutil.copy(f, data / "test" / cls / f.name)
        for f in files[:5]:  # copies of training images, renamed
            shutil.copy(f, data / "val" / cls / f"copy_{f.name}")
    run_dir = tmp_path / "leak"
    result = run(manifest(tmp_path, "leak", data={"source": str(data)}), run_dir)
    assert result.returncode == 1
    status = state(run_dir)
    assert status.phase == "Failed"
    integrity = next(c for c in status.gates["planning"].checks if c.id == "split-integrity")
    assert integrity.result == "fail" and "copy_" in integrity.message
    assert not (run_dir / "02_baseline").exists()
    assert "split-integrity" in status.message


def test_past_the_budget_the_best_result_is_finalized_and_the_report_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "budget"
    path = manifest(tmp_path, "budget", target={"metric": "val_acc", "value": 0.9999},
                    baseline={"epochs": 2, "lr": 0.0005}, budget={"maxDuration": "1s"})
    result = run(path, run_dir)
    status = state(run_dir)
    assert ("Diagnostics", "budget-exhausted") in decisions(run_dir), decisions(run_dir)
    assert status.budget_exhausted
    assert not (run_dir / "04_optimization").exists()
    target = next(c for c in status.gates["finalization"].checks if c.id == "target-met-on-test")
    assert target.result == "warn"
    assert "budget" in (run_dir / "05_finalization/production_ready.md").read_text()
    assert result.returncode == (0 if status.phase == "Succeeded" else 1)


