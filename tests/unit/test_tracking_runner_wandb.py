"""W&B from the control plane (issue 13): each job is told its W&B run
(stable per folder, grouped by pipeline run), and Finalization's model
becomes a ``model`` artifact of the finalization job's W&B run with alias
candidate, then champion (the same version) once approved, read back from
the offline run with wandb's own records. No server: offline mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_tracking_wandb import read_offline_run
from tests.unit.test_vae_runner import VAE_SPEC, _finalization_files
from trainpipe_operator.pipeline import rundir
from trainpipe_operator.pipeline.launchers import ProcessLauncher
from trainpipe_operator.pipeline.runner import LocalRunner
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_operator.tracking.runs import wandb_run_id

wandb = pytest.importorskip("wandb")

T0 = "2026-01-01T00:00:00+00:00"
FOLDER = rundir.FINALIZATION


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("CONFIG", "CACHE", "DATA"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))
    yield
    wandb.teardown()


def test_the_model_is_a_wandb_artifact_candidate_then_champion(tmp_path: Path) -> None:
    pipeline = TrainingPipeline.model_validate({
        "apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": "tones"},
        "spec": {**VAE_SPEC, "approval": {"required": True}, "tracking": {"wandb": {"project": "tones"}}}})
    runner = LocalRunner(pipeline, tmp_path / "run", ProcessLauncher(), "local")
    evidence = _finalization_files(runner)
    (runner.run_dir / FOLDER / "decoder.onnx").write_bytes(b"onnx")
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    status.metrics.best_target_metric = 40.0
    assert runner.tracker is not None
    config = runner.tracker.job_tracking(status, "Finalization", FOLDER, 1, True)
    assert config is not None and config.mlflow is None and config.wandb is not None
    run_id = wandb_run_id("r1", FOLDER)
    assert (config.wandb.run_id, config.wandb.group, config.wandb.mode) == (run_id, "tones-r1", "offline")

    runner._finalize_documents_and_gate(status, evidence)
    runner.tracker.sync(status)
    assert status.phase == "AwaitingApproval" and status.tracking is not None
    assert status.tracking.wandb_aliases == ["candidate"] and status.tracking.degraded is None
    status = runner.approve(status, "dave")
    assert status.phase == "Succeeded" and status.tracking is not None
    assert status.tracking.wandb_aliases == ["candidate", "champion"]

    offline = read_offline_run(runner.run_dir / FOLDER, run_id)
    candidate, champion = offline.artifacts
    assert (candidate.name, candidate.type) == ("tones", "model")
    assert "candidate" in candidate.aliases and "champion" in champion.aliases
    assert champion.digest == candidate.digest  # the same version, now champion
    assert {"decoder.onnx", "deployment_guide.md", "test_results.md"} <= {e.path for e in candidate.manifest.contents}
    metadata = json.loads(champion.metadata)
    assert metadata["runId"] == "r1" and metadata["approved_by"] == "dave" and metadata["test_recon"] == "41.25"
