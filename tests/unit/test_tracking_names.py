"""What a job reports under which name: epoch metrics as in metrics.json,
step metrics under ``step/``, params as the flattened job config, the media
an epoch drew; and nothing at all when tracking is not configured."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from trainpipe_trainer.contract.evidence import EpochRecord, PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.tracking.job_tracker import (
    JobTracker,
    epoch_media,
    epoch_metrics,
    job_params,
    step_metrics,
)


def record(**extra: float) -> EpochRecord:
    return EpochRecord(num=3, train_loss=0.5, val_loss=0.6, lr=1e-3, epoch_seconds=2.0, eta_seconds=9.0,
                       samples_per_second=700.0, loss_gap=math.nan, skipped_steps=0, grad_norm_mean=1.5,
                       val_acc=0.9, **extra)


def test_epoch_metrics_are_the_metrics_json_numbers_by_name() -> None:
    metrics = epoch_metrics(record(val_recon=12.5, kl_weight=0.25))
    assert metrics == {
        "train_loss": 0.5, "val_loss": 0.6, "val_acc": 0.9, "lr": 1e-3, "epoch_seconds": 2.0,
        "samples_per_second": 700.0, "skipped_steps": 0.0, "grad_norm": 1.5,
        "val_recon": 12.5, "kl_weight": 0.25,
    }  # num is the step; eta is no metric; NaN (loss_gap) and unset fields are left out


def test_step_metrics_carry_the_step_prefix_and_skip_non_finite_values() -> None:
    assert step_metrics(0.7, 0.01, None, {"kl_weight": 0.5, "recon_loss": math.inf}) == {
        "step/train_loss": 0.7, "step/lr": 0.01, "step/kl_weight": 0.5,
    }


def test_params_are_the_job_config_flattened_as_in_job_yaml_with_its_hash() -> None:
    config = JobConfig.model_validate({
        "runDir": "/tmp/run", "train": {"lr": 0.01}, "data": {"augment": ["hflip"]},
        "tracking": {"mlflow": {"trackingUri": "http://mlflow:5000", "experimentId": "1", "runId": "abc"}},
    })
    params = job_params(config)
    assert params["train.lr"] == "0.01"
    assert params["data.batchSize"] == "64"
    assert params["model.name"] == "smallcnn"
    assert params["data.augment"] == '["hflip"]'
    assert params["train.patience"] == "null"
    assert params["config_hash"] == config.config_hash()
    assert not any(key.startswith("tracking") for key in params)


def test_epoch_media_are_the_confusion_matrix_and_the_epochs_previews(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "confusion_matrix_epoch_003.png").write_bytes(b"png")
    previews = [
        PreviewRecord(epoch=3, kind="reconstruction", index=0, wav="previews/epoch_003/reconstruction_0.wav",
                      png="previews/epoch_003/reconstruction_0.png", sample_rate=16000, num_samples=16000,
                      peak=0.5, rms=0.1),
        PreviewRecord(epoch=2, kind="prior", index=0, wav="previews/epoch_002/prior_0.wav", sample_rate=16000,
                      num_samples=16000, peak=0.5, rms=0.1),
    ]
    media = epoch_media(tmp_path, 3, previews)
    assert [(m.key, m.artifact_path, m.name, m.kind) for m in media] == [
        ("confusion_matrix", "confusion_matrix", "epoch_3.png", "image"),
        ("previews/reconstruction_0", "previews/epoch_003", "reconstruction_0.wav", "audio"),
        ("previews/reconstruction_0_mel", "previews/epoch_003", "reconstruction_0.png", "image"),
    ]
    assert media[0].path == tmp_path / "plots" / "confusion_matrix_epoch_003.png"
    assert epoch_media(tmp_path, 4, previews) == []


def test_no_tracking_configured_builds_no_tracker() -> None:
    assert JobTracker.from_config(JobConfig(run_dir="/tmp/run")) is None
    assert JobTracker.from_config(JobConfig.model_validate({"runDir": "/tmp/run", "tracking": {}})) is None


def test_the_tracking_package_imports_neither_torch_nor_wandb() -> None:
    """The control plane imports it (mlflow_rest, wandb_sink.log_model_artifact)."""
    code = (
        "import sys\n"
        "import trainpipe_trainer.tracking.sink, trainpipe_trainer.tracking.job_tracker\n"
        "import trainpipe_trainer.tracking.mlflow_sink, trainpipe_trainer.tracking.wandb_sink\n"
        "print(','.join(m for m in ('torch', 'wandb', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == ""
