"""The runner wires the VAE's checks and documents (issue 12): the preview
files it finds on disk (``RunFiles.existing_files``), the job's
``train.keepPeriodic`` and ``vae.previewEvery`` handed to the gates, the
final job's ``vae`` and ``data.audio`` in the deployment guide, the previews
in the test results, and the test figure in the status by name.

Finalization on files laid out as the trainer leaves them: no job is
launched, nothing imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_vae_gates import vae_evidence, vae_export, vae_test
from trainpipe_operator.pipeline import rundir
from trainpipe_operator.pipeline.jobs import baseline_settings, build_job
from trainpipe_operator.pipeline.launchers import ProcessLauncher
from trainpipe_operator.pipeline.runner import LocalRunner
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_trainer.contract.evidence import Evidence

T0 = "2026-01-01T00:00:00+00:00"
VAE_SPEC: dict[str, Any] = {
    "task": "vae",
    "data": {"source": "builtin:tones", "audio": {"sampleRate": 22050, "nMels": 80}},
    "vae": {"latentDim": 24, "previewEvery": 5, "griffinLimIters": 48},
    "target": {"metric": "val_recon", "value": 50.0},
    "finalization": {"export": ["onnx"]},
}


def _runner(tmp_path: Path, **spec: Any) -> LocalRunner:
    pipeline = TrainingPipeline.model_validate({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                                "metadata": {"name": "p"}, "spec": {**VAE_SPEC, **spec}})
    return LocalRunner(pipeline, tmp_path / "run", ProcessLauncher(), "local")


def _finalization_files(runner: LocalRunner, n: int = 10, keep_periodic: int = 3) -> Evidence:
    """The final run's folder as the trainer leaves it: job.yaml, logs, the
    previews it lists (wav and png on disk), evidence, test and export."""
    out = runner.run_dir / rundir.FINALIZATION
    settings = baseline_settings(runner.spec).model_copy(update={"epochs": n})
    job = build_job("p", "Finalization", runner.spec, settings, out, runtime="local")
    job = job.model_copy(update={"train": job.train.model_copy(update={"keep_periodic": keep_periodic})})
    rundir.write_text(out / "job.yaml", job.to_yaml())
    ev = vae_evidence(n=n)
    lines = [f"INFO EPOCH {e.num}/{n} train_loss={e.train_loss:.4f}" for e in ev.epochs] + ["INFO Training complete"]
    rundir.write_text(out / "logs" / "training.log", "\n".join(lines) + "\n")
    rundir.write_json(out / "logs" / "metrics.json", {"epochs": [e.model_dump() for e in ev.epochs]})
    for p in ev.previews:
        for path in (p.wav, p.png):
            if path:
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                (out / path).write_bytes(b"RIFF")
    ev.write(out / "evidence.json")
    vae_test(test_recon=41.25).write(out / "test_evaluation.json")
    vae_export().write(out / "export.json")
    return ev


def _finalize(runner: LocalRunner, ev: Evidence) -> PipelineStatus:
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    status.metrics.best_target_metric = 40.0
    runner._finalize_documents_and_gate(status, ev)
    return status


def _check(status: PipelineStatus, cid: str) -> Any:
    return next(c for c in status.gates["finalization"].checks if c.id == cid)


def test_a_vae_finalization_passes_with_its_previews_on_disk(tmp_path):
    runner = _runner(tmp_path)
    status = _finalize(runner, _finalization_files(runner))
    assert status.phase == "Succeeded", [(c.id, c.message) for c in status.gates["finalization"].checks
                                         if c.result == "fail"]
    previews = _check(status, "final-training/previews")
    assert previews.result == "pass" and "every wav present" in previews.message
    assert _check(status, "final-training/retention").result == "pass"
    # the status shows the task's test figure by name; test accuracy is classification's
    assert status.metrics.test_target_metric == 41.25 and status.metrics.test_acc is None


def test_a_preview_missing_on_disk_fails_the_previews_check(tmp_path):
    runner = _runner(tmp_path)
    ev = _finalization_files(runner)
    missing = next(p.wav for p in ev.previews if p.kind == "reconstruction")
    (runner.run_dir / rundir.FINALIZATION / missing).unlink()
    status = _finalize(runner, ev)
    previews = _check(status, "final-training/previews")
    assert previews.result == "fail" and missing in previews.message
    assert status.phase == "Failed"


def test_retention_reads_the_jobs_keep_periodic(tmp_path):
    """The evidence keeps 3 periodic checkpoints; a job that asked for 2 must
    not pass retention: the gate compares the run with the job's setting."""
    runner = _runner(tmp_path)
    status = _finalize(runner, _finalization_files(runner, keep_periodic=2))
    retention = _check(status, "final-training/retention")
    assert retention.result == "fail" and "kept beyond the 2 most recent" in retention.message


def test_preview_cadence_reads_the_jobs_preview_every(tmp_path):
    """Previews at epochs 5 and 10 (every 5); a job that asked for every 2
    epochs warns about the epochs without one."""
    runner = _runner(tmp_path, vae={**VAE_SPEC["vae"], "previewEvery": 2})
    status = _finalize(runner, _finalization_files(runner))
    previews = _check(status, "final-training/previews")
    assert previews.result == "warn" and "vae.previewEvery is 2" in previews.message


def test_the_documents_use_the_final_jobs_vae_and_audio_and_embed_the_previews(tmp_path):
    runner = _runner(tmp_path)
    _finalize(runner, _finalization_files(runner))
    out = runner.run_dir / rundir.FINALIZATION
    guide = (out / "deployment_guide.md").read_text()
    assert "latent dimension 24" in guide and "standard_normal((4, 24))" in guide
    assert "sample_rate=22050" in guide and "n_mels=80" in guide and "log_mel_to_audio(log_mel, audio_config, 48)" in guide
    results = (out / "test_results.md").read_text()
    assert "epoch 10" in results and "![mel spectrogram, reconstruction 0](previews/epoch_010/reconstruction_0.png)" in results
    assert "confusion" not in results.lower()
