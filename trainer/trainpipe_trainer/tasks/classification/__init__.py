"""Image classification (seed 002): folders of images per class, a model
from ``models/``, cross-entropy, top-1/top-5 accuracy, a confusion matrix per
epoch; on the test split per-class precision/recall/F1; export with
top-1 parity.

Metrics by name: ``train_acc``, ``val_acc``, ``train_top5``, ``val_top5``,
``acc_gap``; at test ``test_acc``, ``test_top5``, ``test_loss``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from trainpipe_trainer.contract.evidence import PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import (
    ClassMetrics,
    ExportReport,
    Preprocessing,
    TestEvaluation,
)
from trainpipe_trainer.tasks.base import (
    EvaluatedModel,
    StepOutput,
    Task,
    TaskData,
    float_or_none,
    int_or_none,
)
from trainpipe_trainer.tasks.classification.confusion import (
    save_confusion_png,
    topk_correct,
    update_confusion,
)

CONFUSION_PNG = "confusion_matrix.png"


class ClassMismatchError(ValueError):
    """The checkpoint was trained on other classes than the data holds."""


class ClassificationTask(Task):
    name = "classification"
    curves_panel = ("accuracy", ("train_acc", "val_acc"), (0.0, 1.0))

    def __init__(self, config: JobConfig, classes: list[str] | None = None) -> None:
        super().__init__(config)
        self.classes: list[str] = list(classes or [])
        self.criterion = nn.CrossEntropyLoss()
        self.confusion: torch.Tensor | None = None

    @classmethod
    def with_classes(cls, classes: list[str]) -> ClassificationTask:
        """The task's steps for injected data (tests, benchmarks): it builds
        nothing itself, so it needs no job config of its own."""
        return cls(JobConfig(run_dir="."), classes)

    # ------------------------------------------------------------ building
    def build_data(self) -> TaskData:
        from trainpipe_trainer.data import build_datasets

        bundle = build_datasets(self.config.data, self.config.seed)
        self.classes = list(bundle.classes)
        return TaskData(train=bundle.train, val=bundle.val, test=bundle.test, report=bundle.report,
                        info={"classes": self.classes})

    def build_model(self, data: TaskData) -> nn.Module:
        from trainpipe_trainer.models import ModelBuildRequest, build_model

        config = self.config
        request = ModelBuildRequest(
            num_classes=len(self.classes), image_size=config.data.image_size, dropout=config.train.dropout
        )
        return build_model(config.model.name, request, pretrained=config.model.pretrained)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def check_batch(self, batch: Any) -> str | None:
        _, targets = batch
        n = len(self.classes)
        if bool(((targets >= 0) & (targets < n)).all()):
            return None
        return f"labels outside [0, {n}): {sorted(set(targets.tolist()) - set(range(n)))}"

    # --------------------------------------------------------------- steps
    def training_step(self, model: nn.Module, batch: Any, epoch_progress: float) -> StepOutput:
        inputs, targets = batch
        logits = model(inputs)
        loss = self.criterion(logits.float(), targets)
        return StepOutput(loss=loss, sums=self._hits(logits, targets), count=int(targets.shape[0]))

    def validation_step(self, model: nn.Module, batch: Any) -> tuple[dict[str, float], int]:
        inputs, targets = batch
        logits = model(inputs).float()
        sums = {"loss_sum": float(self.criterion(logits, targets)) * targets.shape[0], **self._hits(logits, targets)}
        if self.confusion is not None:
            update_confusion(self.confusion, logits, targets)
        return sums, int(targets.shape[0])

    @staticmethod
    def _hits(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        top1, top5 = topk_correct(logits, targets)
        return {"correct1": float(top1), "correct5": float(top5)}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float | None]:
        def mean(sums: dict[str, float], name: str) -> float:
            return sums.get(name, 0.0) / sums["count"] if sums.get("count") else 0.0

        train_acc, val_acc = mean(train, "correct1"), mean(val, "correct1")
        return {
            "train_acc": train_acc,
            "val_acc": val_acc,
            "train_top5": mean(train, "correct5"),
            "val_top5": mean(val, "correct5"),
            "acc_gap": train_acc - val_acc,
        }

    def describe_epoch(self, metrics: dict[str, float | None]) -> str:
        return "train_acc={:.4f} val_acc={:.4f} val_top5={:.4f}".format(
            metrics["train_acc"] or 0.0, metrics["val_acc"] or 0.0, metrics["val_top5"] or 0.0
        )

    def validation_start(self) -> None:
        n = len(self.classes)
        self.confusion = torch.zeros(n, n, dtype=torch.int64)

    def validation_end(self, ctx: Any) -> None:
        if ctx.distributed and self.confusion is not None:
            confusion = self.confusion.to(ctx.device)
            dist.all_reduce(confusion)
            self.confusion = confusion.cpu()

    def epoch_artifacts(self, model: nn.Module, epoch: int, run_dir: Path, final: bool) -> list[PreviewRecord]:
        if self.confusion is not None:
            save_confusion_png(
                self.confusion, self.classes,
                run_dir / "plots" / f"confusion_matrix_epoch_{epoch:03d}.png", f"validation, epoch {epoch}",
            )
        return []

    # -------------------------------------------------------- finalization
    def check_checkpoint(self, checkpoint: Path, state: dict[str, Any], data: TaskData) -> None:
        """The checkpoint's classes must be the data's, in order.

        Raises:
            ValueError: the checkpoint holds no class list.
            ClassMismatchError: its classes are not the data's.
        """
        classes = state.get("classes")
        if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"checkpoint {checkpoint} holds no class list ('classes'); it cannot be evaluated")
        if list(classes) != self.classes:
            raise ClassMismatchError(_mismatch(checkpoint, list(classes), self.config.data.source, self.classes))

    def model_mismatch_detail(self) -> str:
        return f" with {len(self.classes)} classes"

    def evaluate(self, model: nn.Module, data: TaskData, run_dir: Path, state: dict[str, Any]) -> EvaluatedModel:
        from trainpipe_trainer.data import EpochSampler

        config = self.config
        test = data.test
        device = self.device
        loader = DataLoader(
            test, batch_size=config.data.batch_size,
            sampler=EpochSampler(SequentialSampler(test)),  # type: ignore[arg-type]
            num_workers=config.data.num_workers, pin_memory=config.data.pin_memory and device.type == "cuda",
        )
        n = len(self.classes)
        matrix = torch.zeros(n, n, dtype=torch.int64)
        loss_sum, top5, count = 0.0, 0, 0
        wanted = config.evaluate.parity_samples if config.evaluate else 64
        kept: list[torch.Tensor] = []
        with torch.no_grad():
            for inputs, targets in loader:
                if sum(len(k) for k in kept) < wanted:
                    kept.append(inputs[: wanted - sum(len(k) for k in kept)].clone())
                logits = model(inputs.to(device)).float().cpu()
                loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
                update_confusion(matrix, logits, targets)
                top5 += topk_correct(logits, targets)[1]
                count += int(targets.shape[0])

        per_class, macro_f1 = class_metrics(matrix, self.classes)
        loss = loss_sum / count if math.isfinite(loss_sum) else None
        accuracy = float(matrix.trace()) / count
        evaluation = TestEvaluation(
            task=self.name,
            samples=count,
            metrics={"test_acc": accuracy, "test_top5": top5 / count, "test_loss": loss},
            accuracy=accuracy,
            top5=top5 / count,
            loss=loss,
            per_class=per_class,
            macro_f1=macro_f1,
            confusion_matrix=matrix.tolist(),
            classes=list(self.classes),
            checkpoint=str(config.evaluate.checkpoint if config.evaluate else ""),
            checkpoint_epoch=int_or_none(state.get("epoch")),
            checkpoint_val_loss=float_or_none(state.get("val_loss")),
            model=config.model.name,
            data_source=config.data.source,
            split_fingerprint=data.report.split_fingerprint if data.report else "",
            confusion_png=CONFUSION_PNG,
            evaluated_at=datetime.now(timezone.utc).isoformat(),
        )
        title = (f"test split: {Path(evaluation.checkpoint).name}, epoch {evaluation.checkpoint_epoch}, "
                 f"acc {accuracy:.3f}")
        save_confusion_png(matrix, self.classes, run_dir / CONFUSION_PNG, title)
        return EvaluatedModel(evaluation=evaluation, model=model, parity_inputs=torch.cat(kept),
                              info={"classes": list(self.classes)})

    def describe_evaluation(self, evaluation: TestEvaluation) -> str:
        return (f"accuracy {evaluation.accuracy:.4f}, top-5 {evaluation.top5:.4f}, loss {evaluation.loss}, "
                f"macro F1 {evaluation.macro_f1:.4f}")

    def export(self, evaluated: EvaluatedModel, run_dir: Path, formats: list[str]) -> ExportReport:
        from trainpipe_trainer.export import export_model

        inputs = evaluated.parity_inputs
        return export_model(evaluated.model, inputs[:2], self.classes, run_dir, formats, inputs,
                            preprocessing_for(self.config))


def preprocessing_for(config: JobConfig) -> Preprocessing:
    from trainpipe_trainer.data.transforms import DEFAULT_MEAN, DEFAULT_STD

    return Preprocessing(image_size=config.data.image_size, mean=list(DEFAULT_MEAN), std=list(DEFAULT_STD))


def class_metrics(matrix: torch.Tensor, classes: list[str]) -> tuple[list[ClassMetrics], float]:
    """Precision, recall, F1 and support per class from a confusion matrix
    (rows true, columns predicted); 0 where a ratio has no denominator. Macro
    F1 averages the classes that occur as a target or a prediction."""
    m = matrix.to(torch.float64)
    tp = m.diag()
    support = m.sum(dim=1)
    predicted = m.sum(dim=0)
    out: list[ClassMetrics] = []
    f1s: list[float] = []
    for i, name in enumerate(classes):
        precision = float(tp[i] / predicted[i]) if predicted[i] > 0 else 0.0
        recall = float(tp[i] / support[i]) if support[i] > 0 else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out.append(ClassMetrics(class_name=name, precision=precision, recall=recall, f1=f1, support=int(support[i])))
        if support[i] > 0 or predicted[i] > 0:
            f1s.append(f1)
    return out, (sum(f1s) / len(f1s) if f1s else 0.0)


def _mismatch(checkpoint: Path, trained: list[str], source: str, data: list[str]) -> str:
    missing = [c for c in trained if c not in data]
    extra = [c for c in data if c not in trained]
    detail = []
    if missing:
        detail.append(f"not in the data: {missing[:10]}")
    if extra:
        detail.append(f"not in the checkpoint: {extra[:10]}")
    if not detail:
        detail.append("same names in another order")
    return (
        f"class mismatch: checkpoint {checkpoint} was trained on {len(trained)} classes {trained[:10]}, "
        f"but data.source {source} has {len(data)} classes {data[:10]} ({'; '.join(detail)}); "
        "evaluate with the data the model was trained on"
    )
