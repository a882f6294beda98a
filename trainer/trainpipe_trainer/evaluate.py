"""``action: evaluate``: the held-out test split, once, then export and parity.

``run_evaluation`` loads ``evaluate.checkpoint`` (checksum verified,
``weights_only``), lets the job's task refuse it (classification: its classes
must be the data's), rebuilds the configured model and hands it to the task's
``evaluate`` for the test split (classification: accuracy, top-5, loss, the
confusion matrix, per-class precision / recall / F1 and macro F1; the VAE:
ELBO, reconstruction, KL). It writes ``test_evaluation.json`` (and the task's
figures, e.g. ``confusion_matrix.png``) into ``runDir``.

``run_evaluate_job`` is the whole job: the evaluation, then the task's
``export`` of the same model (``model.onnx``, ``model.pt2`` or ``model.ts``,
``export.json``) with parity checks. Its failures are logged to
``logs/evaluate.log`` and returned, never raised.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import (
    EXPORT_FILE,
    TEST_EVALUATION_FILE,
    ExportReport,
    TestEvaluation,
)
from trainpipe_trainer.preflight import job_device, job_log
from trainpipe_trainer.tasks.base import EvaluatedModel, Task, TaskData
from trainpipe_trainer.tasks.classification import (  # noqa: F401 - re-exported: callers import them here
    CONFUSION_PNG,
    ClassMismatchError,
    class_metrics,
    preprocessing_for,
)

EVALUATE_LOG = "logs/evaluate.log"


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
            for p in self.export.parity if not p.agrees
        ]
        ev = self.evaluation
        figure = (f"test accuracy {ev.accuracy:.4f}" if ev.accuracy is not None else
                  ", ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items() if v is not None) or "no test figure")
        summary = f"{figure} on {ev.samples} samples"
        return f"{summary}; export problems: {'; '.join(failed)}" if failed else f"{summary}; exports match PyTorch"


def run_evaluation(config: JobConfig) -> TestEvaluation:
    """Evaluate ``config.evaluate.checkpoint`` on the test split; write
    ``test_evaluation.json`` (and the task's figures, e.g. classification's
    ``confusion_matrix.png``).

    Raises:
        ValueError: no ``evaluate`` section, an empty test split, a checkpoint
            the task refuses (classification: no classes, or
            ``ClassMismatchError``) or whose weights do not fit ``model.name``.
        FileNotFoundError / CheckpointCorruptError: from ``load_checkpoint``.
    """
    return evaluate_checkpoint(config)[1].evaluation


def evaluate_checkpoint(config: JobConfig) -> tuple[Task, EvaluatedModel]:
    """``run_evaluation``, also returning the task and the evaluated model."""
    from trainpipe_trainer.engine.checkpoint import load_checkpoint
    from trainpipe_trainer.job import seed_everything
    from trainpipe_trainer.tasks import resolve_task

    if config.evaluate is None:
        raise ValueError("action: evaluate needs an `evaluate` section (evaluate.checkpoint)")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (TEST_EVALUATION_FILE, CONFUSION_PNG):
        (run_dir / stale).unlink(missing_ok=True)
    seed_everything(config.seed, config.deterministic)

    checkpoint = Path(config.evaluate.checkpoint)
    state = load_checkpoint(checkpoint)
    task = resolve_task(config)
    data = task.build_data()
    if data.report is not None:
        data.report.write(run_dir / "data_report.json")
    task.check_checkpoint(checkpoint, state, data)
    model = _rebuild_model(task, data, config, checkpoint, state)
    if len(data.test) == 0:  # type: ignore[arg-type]
        raise ValueError(f"the test split of {config.data.source} holds no sample: nothing to evaluate")
    device = job_device(config)
    task.setup(device)
    model.to(device).eval()
    evaluated = task.evaluate(model, data, run_dir, state)
    evaluated.evaluation.write(run_dir / TEST_EVALUATION_FILE)
    return task, evaluated


def _rebuild_model(task: Task, data: TaskData, config: JobConfig, checkpoint: Path, state: dict) -> nn.Module:
    weights = state.get("model_state_dict")
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"checkpoint {checkpoint} holds no model_state_dict")
    model = task.build_model(data)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"checkpoint {checkpoint} does not fit model.name {config.model.name!r}"
            f"{task.model_mismatch_detail()}: {first}"
        ) from exc
    return model


def run_evaluate_job(config: JobConfig) -> EvaluateJobResult:
    """``action: evaluate``: ``run_evaluation``, then ``export_model`` with the
    same model and the first ``evaluate.paritySamples`` test inputs. Never
    raises: a failure is the result's ``error`` (and ``logs/evaluate.log``)."""
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
            task, evaluated = evaluate_checkpoint(config)
            result.evaluation = ev = evaluated.evaluation
            log.info("Test: %d samples, %s", ev.samples, task.describe_evaluation(ev))
            result.export = task.export(evaluated, run_dir, list(config.evaluate.export))
        except Exception as exc:  # noqa: BLE001 - every failure must become the result
            result.error = f"{type(exc).__name__}: {exc}"
            log.error("Evaluation failed: %s\n%s", result.error, "".join(traceback.format_exception(exc)))
        result.seconds = time.perf_counter() - started
        result.files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
        log.info("Evaluate job %s (%.1fs): %s", result.status, result.seconds, result.reason)
    return result
