"""The vae task through trainpipe's engine on builtin:tones: metrics by name,
previews that are real audio, exact resume, evaluation and per-part export,
and posterior collapse measured where the seed says it shows (val_kl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.evaluate import run_evaluate_job
from trainpipe_trainer.job import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tones_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tones-cache")


@pytest.fixture
def vae_job(tmp_path: Path, tones_cache: Path):
    def factory(name: str = "vae", vae: dict | None = None, **train) -> JobConfig:
        return JobConfig.model_validate({
            "name": name, "runDir": str(tmp_path / name), "seed": 5, "task": "vae",
            "data": {"source": "builtin:tones", "batchSize": 16, "cacheDir": str(tones_cache),
                     "augment": ["gain", "noise"]},
            "model": {"name": "vae-small"},
            "vae": {"previewEvery": 2, "previewClips": 2, "priorSamples": 1, "griffinLimIters": 4, **(vae or {})},
            "train": {"epochs": 3, "lr": 0.002, "logEverySteps": 2, **train},
            "ray": {"enabled": False},
        })

    return factory


def test_the_vae_reports_its_metrics_by_name_and_writes_real_audio_previews(vae_job) -> None:
    config = vae_job()
    evidence = run_job(config)
    assert evidence.status == "completed", evidence.reason
    assert evidence.task == "vae"
    for epoch in evidence.epochs:
        for name in ("train_recon", "train_kl", "val_recon", "val_kl", "kl_weight", "active_units"):
            assert epoch.metric(name) is not None, (epoch.num, name)
        # train_loss and val_loss are the same quantity: the negative ELBO per sample
        assert epoch.val_loss == pytest.approx(epoch.metric("val_recon") + epoch.metric("val_kl"), rel=1e-6)
    run_dir = Path(config.run_dir)
    on_disk = json.loads((run_dir / "logs" / "metrics.json").read_text())["epochs"]
    assert [e["val_recon"] for e in on_disk] == [e.metric("val_recon") for e in evidence.epochs]
    log = (run_dir / "logs" / "training.log").read_text()
    assert "recon_loss=" in log and "kl_loss=" in log and "kl_weight=" in log and "val_kl=" in log

    # previews at epoch 2 (previewEvery) and 3 (the last): 2 reconstructions + 1 prior sample each
    assert sorted({(p.epoch, p.kind) for p in evidence.previews}) == [
        (2, "prior"), (2, "reconstruction"), (3, "prior"), (3, "reconstruction")]
    rate, chunk = config.data.audio.sample_rate, round(config.data.audio.sample_rate * config.data.audio.chunk_seconds)
    for preview in evidence.previews:
        wave, file_rate = sf.read(run_dir / preview.wav)
        assert file_rate == preview.sample_rate == rate
        assert len(wave) == preview.num_samples == chunk
        assert (run_dir / preview.png).read_bytes()[:4] == b"\x89PNG"
        assert preview.rms > 0
    assert len([p for p in evidence.previews if p.kind == "reconstruction"]) == 4

    evaluate = JobConfig.model_validate({
        **config.model_dump(by_alias=True), "action": "evaluate", "runDir": str(run_dir / "eval"),
        "evaluate": {"checkpoint": str(run_dir / "checkpoints" / "best_model.pt")},
        "vae": {**config.vae.model_dump(by_alias=True), "exportParts": ["decoder", "encoder"]},
    })
    result = run_evaluate_job(evaluate)
    assert result.ok, result.reason
    test = TestEvaluation.read(run_dir / "eval" / "test_evaluation.json")
    assert test.task == "vae" and test.accuracy is None
    assert test.metrics["test_loss"] == pytest.approx(test.metrics["test_recon"] + test.metrics["test_kl"])
    export = ExportReport.read(run_dir / "eval" / "export.json")
    assert export.ok and set(export.parts) == {"decoder", "encoder"}
    assert (run_dir / "eval" / "decoder.onnx").exists() and (run_dir / "eval" / "encoder.onnx").exists()
    assert {p.part for p in export.parity} == {"decoder", "encoder"}


def test_the_vae_resumes_exactly_after_a_stop_mid_epoch(vae_job) -> None:
    whole = run_job(vae_job("whole", vae={"priorSamples": 0}))
    stop = StopSignal()
    first = run_job(vae_job("split", vae={"priorSamples": 0}), stop=stop,
                    on_step=lambda step: stop.request("test") if step == 5 else None)
    assert first.status == "interrupted"
    resumed = run_job(vae_job("split", vae={"priorSamples": 0}))
    assert resumed.status == "completed" and resumed.resumed_from_step
    for name in ("train_loss", "val_loss", "val_recon", "val_kl"):
        assert [e.metric(name) for e in resumed.epochs] == [e.metric(name) for e in whole.epochs], name
    # previews written before the stop are kept in the evidence of the resumed run
    assert {p.epoch for p in resumed.previews} == {p.epoch for p in whole.previews}


def test_the_vae_skips_a_non_finite_step_counts_and_logs_it_and_trains_on(vae_job) -> None:
    """Seed 004's truth 9: a NaN loss skips the update instead of crashing
    (the engine's guard, the same as the classifier's)."""
    from trainpipe_trainer.engine.loop import TrainingParts
    from trainpipe_trainer.tasks.vae.task import VaeTask

    config = vae_job("nan", epochs=2, maxConsecutiveNonfinite=3)
    task = VaeTask(config)
    data = task.build_data()
    data.train.waves[0, 0, :100] = float("nan")  # one poisoned chunk: its batch's loss is NaN
    parts = TrainingParts(model=task.build_model(data), train_set=data.train, val_set=data.val, task=task)
    evidence = run_job(config, parts=parts)
    assert evidence.status == "completed", evidence.reason
    assert evidence.skipped_steps_total == 2  # one batch per epoch holds the chunk
    assert all(e.skipped_steps == 1 for e in evidence.epochs)
    assert all(e.train_loss == e.train_loss for e in evidence.epochs)  # finite: the skipped batch is not averaged in
    assert "Skipped step: non-finite loss" in (Path(config.run_dir) / "logs" / "training.log").read_text()


def test_the_vae_checkpoints_periodically_keeps_three_and_reports_eta(vae_job) -> None:
    config = vae_job("ckpt", vae={"previewEvery": 10}, epochs=5, checkpointEvery=1, keepPeriodic=3)
    evidence = run_job(config)
    assert evidence.status == "completed", evidence.reason
    assert evidence.periodic_checkpoints == [f"checkpoint_epoch_{n}.pt" for n in (3, 4, 5)]
    assert evidence.checkpoints["best"].loads and evidence.checkpoints["last"].loads
    assert [e.eta_seconds > 0 for e in evidence.epochs[:-1]] == [True] * 4 and evidence.epochs[-1].eta_seconds == 0
    assert all(e.loss_gap == pytest.approx((e.val_loss - e.train_loss) / e.train_loss) for e in evidence.epochs)
