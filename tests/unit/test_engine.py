"""The engine's loop: exact resume, the non-finite guard, clipping,
accumulation, early stopping, and what a run leaves in its directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from trainpipe_trainer.engine import checkpoint as ckpt
from trainpipe_trainer.engine.distributed import DistContext
from trainpipe_trainer.engine.loop import Engine, TrainingParts
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tasks.classification import ClassificationTask


class TensorPairs(Dataset):
    """(x, y) pairs; accepts the ``(index, epoch)`` keys the engine's sampler yields."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        index = key[0] if isinstance(key, tuple) else key
        return self.x[index], self.y[index]


def linear_parts(n: int = 32, features: int = 6, classes: int = 3, scale: float = 1.0, seed: int = 0) -> TrainingParts:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen) * scale
    y = torch.randint(0, classes, (n,), generator=gen)
    torch.manual_seed(seed)  # the same initial weights in every call
    model = nn.Linear(features, classes)
    return TrainingParts(model=model, train_set=TensorPairs(x, y), val_set=TensorPairs(x[:8], y[:8]),
                         task=ClassificationTask.with_classes([str(c) for c in range(classes)]))


def losses(evidence) -> list[tuple[float, float, float]]:  # type: ignore[no-untyped-def]
    return [(e.train_loss, e.val_loss, e.val_acc) for e in evidence.epochs]


@pytest.mark.parametrize(
    "loader_workers", [0, pytest.param(2, marks=pytest.mark.slow, id="2-loader-workers")]
)
def test_resume_mid_epoch_reports_the_same_losses_as_an_uninterrupted_run(make_job, loader_workers: int) -> None:
    overrides = {
        "train": {"epochs": 3, "dropout": 0.3},
        "data": {"augment": ["rotation", "crop"], "numWorkers": loader_workers},
    }
    straight = run_job(make_job("straight", **overrides), stop=StopSignal())
    assert straight.status == "completed"

    interrupted_cfg = make_job("interrupted", **overrides)
    stop = StopSignal()
    steps_per_epoch = math.ceil(1437 / 64)  # digits: 1,437 training samples at a 0.8 split
    stop_at = steps_per_epoch + 7  # mid-way through epoch 2

    def request_stop(step: int) -> None:
        if step == stop_at:
            stop.request("test")

    first = run_job(interrupted_cfg, stop=stop, on_step=request_stop)
    assert first.status == "interrupted"
    assert len(first.epochs) == 1
    saved = ckpt.load_checkpoint(Path(interrupted_cfg.run_dir) / "checkpoints" / "last_model.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 7)

    resumed = run_job(interrupted_cfg, stop=StopSignal())
    assert resumed.status == "completed"
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (1, 7)
    assert losses(resumed) == losses(straight)  # exact, not approximate


def test_a_nan_batch_is_skipped_counted_and_logged(tmp_path: Path, make_job) -> None:
    parts = linear_parts(n=32)
    parts.train_set.x[5] = float("nan")  # one poisoned sample: one batch per epoch
    config = make_job("nan", data={"batchSize": 8}, train={"epochs": 2, "maxConsecutiveNonfinite": 3})
    evidence = run_job(config, parts=parts, stop=StopSignal())
    assert evidence.status == "completed"
    assert evidence.skipped_steps_total == 2
    assert [e.skipped_steps for e in evidence.epochs] == [1, 1]
    assert all(torch.isfinite(p).all() for p in parts.model.parameters())
    log_text = (Path(config.run_dir) / "logs" / "training.log").read_text()
    assert log_text.count("Skipped step: non-finite loss") == 2


def test_too_many_consecutive_nonfinite_steps_fail_the_run_with_the_reason(make_job) -> None:
    parts = linear_parts(n=32)
    parts.train_set.x[:] = float("inf")
    config = make_job("diverged", data={"batchSize": 8}, train={"maxConsecutiveNonfinite": 3})
    evidence = run_job(config, parts=parts, stop=StopSignal())
    assert evidence.status == "failed"
    assert evidence.exception is not None and evidence.exception.type == "NonFiniteTrainingError"
    assert "3 consecutive steps" in evidence.reason
    assert evidence.skipped_steps_total == 3


def _one_sgd_step_update_norm(make_job, clip: float | None) -> float:
    parts = linear_parts(n=8, scale=1000.0)
    before = [p.detach().clone() for p in parts.model.parameters()]
    config = make_job(
        f"clip-{clip}", data={"batchSize": 8},
        train={"epochs": 1, "optimizer": "sgd", "momentum": 0.0, "weightDecay": 0.0, "lr": 1.0,
               "scheduler": "none", "gradClipNorm": clip},
    )
    Engine(config, parts, DistContext()).fit()
    delta = [(p.detach() - b).flatten() for p, b in zip(parts.model.parameters(), before, strict=False)]
    return float(torch.cat(delta).norm())


def test_gradient_clipping_bounds_the_update(make_job) -> None:
    assert _one_sgd_step_update_norm(make_job, clip=1.0) <= 1.0 + 1e-5
    assert _one_sgd_step_update_norm(make_job, clip=None) > 10.0


def _params_after_one_epoch(make_job, batch: int, accum: int) -> torch.Tensor:
    parts = linear_parts(n=16)
    config = make_job(
        f"accum-{batch}-{accum}", data={"batchSize": batch},
        train={"epochs": 1, "optimizer": "sgd", "momentum": 0.0, "weightDecay": 0.0, "lr": 0.5,
               "scheduler": "none", "gradClipNorm": None, "gradAccumSteps": accum},
    )
    Engine(config, parts, DistContext()).fit()
    return torch.cat([p.detach().flatten() for p in parts.model.parameters()])


def test_gradient_accumulation_equals_one_large_batch(make_job) -> None:
    large = _params_after_one_epoch(make_job, batch=16, accum=1)
    accumulated = _params_after_one_epoch(make_job, batch=8, accum=2)
    two_steps = _params_after_one_epoch(make_job, batch=8, accum=1)
    torch.testing.assert_close(accumulated, large, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(two_steps, large, atol=1e-4)


class ConstantModel(nn.Module):
    """Predicts the same logits whatever it is given: val_loss never improves."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.detach().expand(x.shape[0], -1) + 0 * self.bias


def test_early_stopping_after_patience_epochs_without_improvement(make_job) -> None:
    parts = linear_parts(n=16)
    parts.model = ConstantModel(3)
    config = make_job("patience", data={"batchSize": 8}, train={"epochs": 10, "patience": 2, "lr": 1e-9})
    evidence = run_job(config, parts=parts, stop=StopSignal())
    assert evidence.status == "early_stopped" and evidence.completed
    assert len(evidence.epochs) == 3  # epoch 1 sets the best; 2 and 3 do not improve


def test_a_run_leaves_logs_metrics_plots_and_retained_checkpoints(make_job) -> None:
    config = make_job("artifacts", train={"epochs": 5, "checkpointEvery": 1, "keepPeriodic": 3})
    evidence = run_job(config, stop=StopSignal())
    run = Path(config.run_dir)
    assert evidence.status == "completed"
    metrics = json.loads((run / "logs" / "metrics.json").read_text())
    assert [e["num"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "val_top5", "lr", "epoch_seconds",
                "eta_seconds", "samples_per_second", "loss_gap", "skipped_steps"):
        assert key in metrics["epochs"][0], key
    log_text = (run / "logs" / "training.log").read_text()
    for n in range(1, 6):
        assert f"EPOCH {n}/5 " in log_text
    assert "Training complete" in log_text
    assert sorted(p.name for p in (run / "plots").glob("confusion_matrix_epoch_*.png")) == [
        f"confusion_matrix_epoch_{n:03d}.png" for n in range(1, 6)
    ]
    assert evidence.periodic_checkpoints == [f"checkpoint_epoch_{n}.pt" for n in (3, 4, 5)]
    assert evidence.checkpoints["best"].loads and evidence.checkpoints["best"].has_optimizer_state
    assert evidence.checkpoints["last"].epoch == 5
    assert json.loads((run / "environment.json").read_text())["seeds"]["torch"] == 7
    assert (run / "data_report.json").exists() and (run / "evidence.json").exists()
    assert evidence.epochs[-1].val_acc > 0.5  # it learns (chance is 0.1)


def test_resuming_with_another_config_is_refused(make_job) -> None:
    run_job(make_job("mismatch", train={"epochs": 1}), stop=StopSignal())
    evidence = run_job(make_job("mismatch", train={"epochs": 1, "lr": 0.01}), stop=StopSignal())
    assert evidence.status == "failed"
    assert "another job config" in evidence.reason and "--fresh" in evidence.reason
