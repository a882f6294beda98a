"""A custom trainpipe task: regression on a CSV file (``x1..xk, y``).

Install this module in the trainer image (or put its folder on PYTHONPATH)
and name it in the pipeline::

    task: custom
    customTask:
      entrypoint: regression_task:Regression
      metrics:
        - {name: val_mse, direction: minimize}
        - {name: test_mse, direction: minimize}
    data: {source: examples/custom-task/regression.csv}
    target: {metric: val_mse, value: 0.05}

trainpipe's engine does the rest: DDP, mixed precision, clipping, the
non-finite guard, checkpoints and exact resume, telemetry, evidence, the gates.
The task says how the data is read and split, what the model is, what a
batch's loss and metrics are, and how the test split is evaluated and the
model exported. Every metric it reports is read by name by the control plane
(``customTask.metrics`` gives their directions).
"""

from __future__ import annotations

import csv
import hashlib
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainpipe_trainer.contract.data_report import DataReport, NonFiniteSample
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.export import ExportNaming, export_model
from trainpipe_trainer.tasks import EvaluatedModel, StepOutput, Task, TaskData

SPLITS = ("train", "val", "test")


class Rows(Dataset):
    """(features, target) rows; the engine's samplers pass ``(index, epoch)`` keys."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = key[0] if isinstance(key, tuple) else key
        return self.x[index], self.y[index]


class Regression(Task):
    name = "regression"
    curves_panel = ("mean squared error", ("train_mse", "val_mse"), None)

    # ------------------------------------------------------------ building
    def build_data(self) -> TaskData:
        path = Path(self.config.data.source.removeprefix("file://"))
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [[float(v) for v in row] for row in list(csv.reader(handle))[1:] if row]
        table = torch.tensor(rows, dtype=torch.float32)
        order = torch.randperm(len(table), generator=torch.Generator().manual_seed(self.config.seed))
        fractions = self.config.data.split
        n_train = int(len(table) * fractions.train)
        n_val = int(len(table) * fractions.val)
        parts = dict(zip(SPLITS, (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]),
                         strict=True))
        splits = {name: Rows(table[idx, :-1], table[idx, -1:]) for name, idx in parts.items()}
        nonfinite = [
            NonFiniteSample(path=f"{path.name}:{int(i) + 2}", split=name, nan_count=int(table[i].isnan().sum()),
                            inf_count=int(table[i].isinf().sum()))
            for name, idx in parts.items() for i in idx if not bool(torch.isfinite(table[i]).all())
        ]
        total = len(table)
        listing = "\n".join(f"{name}\t{int(i)}" for name, idx in parts.items() for i in sorted(idx.tolist()))
        report = DataReport(
            source=self.config.data.source, root=str(path.parent), layout="split", seed=self.config.seed,
            classes=[], counts={name: {"rows": len(idx)} for name, idx in parts.items()},
            requested_fractions=fractions.model_dump(),
            actual_fractions={name: len(idx) / total for name, idx in parts.items()},
            total_samples=total, files_scanned=1,
            split_fingerprint=hashlib.sha256(listing.encode()).hexdigest(),
            nonfinite_samples=nonfinite,
        )
        return TaskData(train=splits["train"], val=splits["val"], test=splits["test"], report=report,
                        info={"features": table.shape[1] - 1})

    def build_model(self, data: TaskData) -> nn.Module:
        features = int(data.info["features"])
        hidden = int(self.config.custom_task.options.get("hidden", 32)) if self.config.custom_task else 32
        return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    # --------------------------------------------------------------- steps
    def training_step(self, model: nn.Module, batch: Any, epoch_progress: float) -> StepOutput:
        x, y = batch
        loss = nn.functional.mse_loss(model(x).float(), y)
        return StepOutput(loss=loss, sums={"se_sum": float(loss.detach()) * len(y)}, count=len(y))

    def validation_step(self, model: nn.Module, batch: Any) -> tuple[dict[str, float], int]:
        x, y = batch
        error = model(x).float() - y
        se = float((error ** 2).sum())
        return {"loss_sum": se, "se_sum": se, "ae_sum": float(error.abs().sum())}, len(y)

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float | None]:
        def mean(sums: dict[str, float], name: str) -> float | None:
            return sums[name] / sums["count"] if sums.get("count") and name in sums else None

        return {"train_mse": mean(train, "se_sum"), "val_mse": mean(val, "se_sum"), "val_mae": mean(val, "ae_sum")}

    # -------------------------------------------------------- finalization
    def evaluate(self, model: nn.Module, data: TaskData, run_dir: Path, state: dict[str, Any]) -> EvaluatedModel:
        test = data.test
        assert isinstance(test, Rows)
        with torch.no_grad():
            error = model(test.x.to(self.device)).float().cpu() - test.y
        mse = float((error ** 2).mean())
        evaluation = TestEvaluation(
            task="custom", samples=len(test), loss=mse if math.isfinite(mse) else None,
            metrics={"test_mse": mse, "test_mae": float(error.abs().mean()), "test_loss": mse},
            confusion_png=None, checkpoint=str(self.config.evaluate.checkpoint if self.config.evaluate else ""),
            checkpoint_epoch=state.get("epoch"), model=self.config.model.name,
            data_source=self.config.data.source, split_fingerprint=data.report.split_fingerprint if data.report else "",
            evaluated_at=datetime.now(timezone.utc).isoformat(),
        )
        return EvaluatedModel(evaluation=evaluation, model=model, parity_inputs=test.x[:64])

    def export(self, evaluated: EvaluatedModel, run_dir: Path, formats: list[str]) -> ExportReport:
        inputs = evaluated.parity_inputs
        naming = ExportNaming(stem="model", input_name="features", output_name="prediction", top1=False)
        return export_model(evaluated.model, inputs[:2], [], run_dir, formats, inputs, None, naming)
