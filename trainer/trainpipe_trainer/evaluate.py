"""``action: evaluate``: the held-out test split, once, then export and parity.

``run_evaluation`` loads ``evaluate.checkpoint`` (checksum verified,
``weights_only``), rebuilds the configured model with the checkpoint's
classes, checks they are the data's classes, and evaluates the test split:
accuracy, top-5, loss, the confusion matrix, per-class precision / recall /
F1 computed from it, and macro F1. It writes ``test_evaluation.json`` and
``confusion_matrix.png`` into ``runDir``.

``run_evaluate_job`` is the whole job: the evaluation, then ``export_model``
on the same model with the first ``evaluate.paritySamples`` test inputs
(``model.onnx``, ``model.pt2`` or ``model.ts``, ``export.json``). Its
failures are logged to ``logs/evaluate.log`` and returned, never raised.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import (
    EXPORT_FILE,
    TEST_EVALUATION_FILE,
    ClassMetrics,
    ExportReport,
    Preprocessing,
    TestEvaluation,
)
from trainpipe_trainer.preflight import job_device, job_log

CONFUSION_PNG = "confusion_matrix.png"
EVALUATE_LOG = "logs/evaluate.log"


class ClassMismatchError(ValueError):
    """The checkpoint was trained on other classes than the data holds."""


@dataclass
class EvaluatedModel:
    """What one pass over the test split leaves for the export."""

    evaluation: TestEvaluation
    model: nn.Module
    parity_inputs: torch.Tensor
    classes: list[str]


@dataclass
class EvaluateJobResult:
    """The outcome of ``action: evaluate``. ``ok``: the test split was
    evaluated and every export was written, checked and matched PyTorch."""

    evaluation: TestEvaluation | None = None
    export: ExportReport | None = None
    error: str | None = None
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.evaluation is not None and self.export is not None and self.export.ok

    @property
    def status(self) -> str:
        return "completed" if self.ok else "failed"

    @property
    def reason(self) -> str:
        if self.error:
            return self.error
        if self.evaluation is None or self.export is None:
            return "not run"
        failed = [f"{a.format}: {a.error}" for a in self.export.artifacts if a.error or not a.checker_ok]
        failed += [
            f"{p.runtime} parity: max |diff| {p.max_abs_diff}, allclose {p.allclose}, "
            f"top-1 agrees on {p.top1_agree}/{p.samples}" + (f" ({p.error})" if p.error else "")
            for p in self.export.parity if not (p.allclose and p.top1_agree_all and p.error is None)
        ]
        summary = f"test accuracy {self.evaluation.accuracy:.4f} on {self.evaluation.samples} samples"
        return f"{summary}; export problems: {'; '.join(failed)}" if failed else f"{summary}; exports match PyTorch"


def preprocessing_for(config: JobConfig) -> Preprocessing:
    from trainpipe_trainer.data.transforms import DEFAULT_MEAN, DEFAULT_STD

    return Preprocessing(image_size=config.data.image_size, mean=list(DEFAULT_MEAN), std=list(DEFAULT_STD))


def run_evaluation(config: JobConfig) -> TestEvaluation:
    """Evaluate ``config.evaluate.checkpoint`` on the test split; write
    ``test_evaluation.json`` and ``confusion_matrix.png``.

    Raises:
        ValueError: no ``evaluate`` section, an empty test split, a checkpoint
            without classes or whose weights do not fit ``model.name``;
            ``ClassMismatchError`` when its classes are not the data's.
        FileNotFoundError / CheckpointCorruptError: from ``load_checkpoint``.
    """
    return evaluate_checkpoint(config).evaluation


def evaluate_checkpoint(config: JobConfig) -> EvaluatedModel:
    """``run_evaluation``, also returning the model and the parity inputs."""
    from trainpipe_trainer.data import EpochSampler, build_datasets
    from trainpipe_trainer.engine.accumulator import topk_correct
    from trainpipe_trainer.engine.checkpoint import load_checkpoint
    from trainpipe_trainer.engine.confusion import save_confusion_png, update_confusion
    from trainpipe_trainer.job import seed_everything

    if config.evaluate is None:
        raise ValueError("action: evaluate needs an `evaluate` section (evaluate.checkpoint)")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (TEST_EVALUATION_FILE, CONFUSION_PNG):
        (run_dir / stale).unlink(missing_ok=True)
    seed_everything(config.seed, config.deterministic)

    checkpoint = Path(config.evaluate.checkpoint)
    state = load_checkpoint(checkpoint)
    classes = state.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"checkpoint {checkpoint} holds no class list ('classes'); it cannot be evaluated")
    classes = list(classes)
    bundle = build_datasets(config.data, config.seed)
    bundle.report.write(run_dir / "data_report.json")
    if classes != bundle.classes:
        raise ClassMismatchError(_mismatch(checkpoint, classes, config.data.source, bundle.classes))
    model = _rebuild_model(config, checkpoint, state, len(classes))

    test = bundle.test
    if len(test) == 0:
        raise ValueError(f"the test split of {config.data.source} holds no sample: nothing to evaluate")
    device = job_device(config)
    model.to(device).eval()
    loader = DataLoader(
        test, batch_size=config.data.batch_size, sampler=EpochSampler(SequentialSampler(test)),
        num_workers=config.data.num_workers, pin_memory=config.data.pin_memory and device.type == "cuda",
    )
    n = len(classes)
    matrix = torch.zeros(n, n, dtype=torch.int64)
    loss_sum, top5, count = 0.0, 0, 0
    wanted = config.evaluate.parity_samples
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

    per_class, macro_f1 = class_metrics(matrix, classes)
    loss = loss_sum / count if math.isfinite(loss_sum) else None
    evaluation = TestEvaluation(
        samples=count,
        accuracy=float(matrix.trace()) / count,
        top5=top5 / count,
        loss=loss,
        per_class=per_class,
        macro_f1=macro_f1,
        confusion_matrix=matrix.tolist(),
        classes=classes,
        checkpoint=str(checkpoint),
        checkpoint_epoch=_int_or_none(state.get("epoch")),
        checkpoint_val_loss=_float_or_none(state.get("val_loss")),
        model=config.model.name,
        data_source=config.data.source,
        split_fingerprint=bundle.report.split_fingerprint,
        confusion_png=CONFUSION_PNG,
        evaluated_at=datetime.now(timezone.utc).isoformat(),
    )
    title = f"test split: {checkpoint.name}, epoch {evaluation.checkpoint_epoch}, acc {evaluation.accuracy:.3f}"
    save_confusion_png(matrix, classes, run_dir / CONFUSION_PNG, title)
    evaluation.write(run_dir / TEST_EVALUATION_FILE)
    return EvaluatedModel(evaluation=evaluation, model=model, parity_inputs=torch.cat(kept), classes=classes)


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


def _rebuild_model(config: JobConfig, checkpoint: Path, state: dict, num_classes: int) -> nn.Module:
    from trainpipe_trainer.models import ModelBuildRequest, build_model

    weights = state.get("model_state_dict")
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"checkpoint {checkpoint} holds no model_state_dict")
    request = ModelBuildRequest(
        num_classes=num_classes, image_size=config.data.image_size, dropout=config.train.dropout
    )
    model = build_model(config.model.name, request)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"checkpoint {checkpoint} does not fit model.name {config.model.name!r} with "
            f"{num_classes} classes: {first}"
        ) from exc
    return model


def _int_or_none(value: object) -> int | None:
    try:
        return None if value is None else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float_or_none(value: object) -> float | None:
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def run_evaluate_job(config: JobConfig) -> EvaluateJobResult:
    """``action: evaluate``: ``run_evaluation``, then ``export_model`` with the
    same model and the first ``evaluate.paritySamples`` test inputs. Never
    raises: a failure is the result's ``error`` (and ``logs/evaluate.log``)."""
    from trainpipe_trainer.export import export_model

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / EXPORT_FILE).unlink(missing_ok=True)
    result = EvaluateJobResult()
    started = time.perf_counter()
    with job_log(run_dir / EVALUATE_LOG, "trainpipe.evaluate") as log:
        try:
            if config.evaluate is None:
                raise ValueError("action: evaluate needs an `evaluate` section (evaluate.checkpoint)")
            log.info("Evaluating %s on the test split of %s", config.evaluate.checkpoint, config.data.source)
            evaluated = evaluate_checkpoint(config)
            result.evaluation = ev = evaluated.evaluation
            log.info("Test: %d samples, accuracy %.4f, top-5 %.4f, loss %s, macro F1 %.4f",
                     ev.samples, ev.accuracy, ev.top5, ev.loss, ev.macro_f1)
            inputs = evaluated.parity_inputs
            result.export = export_model(
                evaluated.model, inputs[:2], evaluated.classes, run_dir, list(config.evaluate.export),
                inputs, preprocessing_for(config),
            )
        except Exception as exc:  # noqa: BLE001 - every failure must become the result
            result.error = f"{type(exc).__name__}: {exc}"
            log.error("Evaluation failed: %s\n%s", result.error, "".join(traceback.format_exception(exc)))
        result.seconds = time.perf_counter() - started
        result.files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
        log.info("Evaluate job %s (%.1fs): %s", result.status, result.seconds, result.reason)
    return result
