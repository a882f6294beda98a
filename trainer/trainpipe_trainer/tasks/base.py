"""The task seam: what differs between kinds of training.

The engine (``engine/``) trains any ``Task``: it owns the loop, DDP, mixed
precision, accumulation, clipping, the non-finite guard, stop and resume,
checkpoints and retention, telemetry and evidence. A task owns the rest, in
the shape of Lightning's ``LightningModule`` hooks:

- ``build_data``: read and split the dataset, and report what was found;
- ``build_model``: a model from the task's registry;
- ``training_step`` / ``validation_step``: one batch's loss, and the *sums*
  its metrics are made of (sums add up across DDP ranks and survive a
  mid-epoch checkpoint exactly; means do not);
- ``epoch_metrics``: sums -> the metrics an epoch reports, by name;
- ``validation_end`` / ``epoch_artifacts``: per-epoch artifacts (a confusion
  matrix, audio previews);
- ``evaluate`` / ``export``: Finalization's test split and exported model.

The metric names a task reports are the names the control plane reads (its
catalog comes from ``spec.task``, not from this code), so a VAE's
``val_recon`` is a target exactly as classification's ``val_acc`` is.

A custom task is a subclass installed in the trainer image and named by
``customTask.entrypoint`` (``module:object``); see ``examples/custom_task``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from trainpipe_trainer.contract.evidence import PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig

if TYPE_CHECKING:
    from trainpipe_trainer.contract.data_report import DataReport
    from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
    from trainpipe_trainer.engine.distributed import DistContext


@dataclass
class TaskData:
    """The three splits and what the task found reading them.

    ``sharded``: the splits hold only this DDP rank's share (the task was
    told its place with ``Task.shard`` and read only its files). The engine
    then samples the local train set whole, padded to the longest rank's
    length, and validates each rank's local val set once; otherwise every
    rank holds every sample and the engine strides the indices over ranks."""

    train: Dataset
    val: Dataset
    test: Dataset
    report: DataReport | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sharded: bool = False


@dataclass
class StepOutput:
    """One training batch: the loss to back-propagate (a scalar tensor), the
    task's metric sums it adds (plain floats; the engine adds ``loss_sum``
    and ``count`` itself), and how many samples it held.

    ``recorded_loss``: the value recorded as this batch's training loss when
    it is not the back-propagated one (the VAE back-propagates an annealed
    objective but records the negative ELBO, so train and val losses are the
    same quantity). ``step_metrics``: per-step values for the step log line
    and telemetry (the VAE's ``recon_loss``, ``kl_loss``, ``kl_weight``)."""

    loss: torch.Tensor
    sums: dict[str, float]
    count: int
    recorded_loss: float | None = None
    step_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluatedModel:
    """Finalization's test pass: the evaluation (written as
    ``test_evaluation.json``), the model, and inputs for the export's parity
    checks."""

    evaluation: TestEvaluation
    model: nn.Module
    parity_inputs: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One kind of training. Subclass it, set ``name``, implement the
    abstract methods; the defaults of the others do nothing.

    A task object lives in one process (one DDP rank); it is built from the
    job config with ``Task(config)`` and may keep state (class names, a mel
    transform on the training device)."""

    name: ClassVar[str] = ""
    #: learning_curves.png's second panel: (title, metric names, y range or None).
    curves_panel: ClassVar[tuple[str, tuple[str, ...], tuple[float, float] | None] | None] = None

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.device = torch.device("cpu")

    # ------------------------------------------------------------ building
    def shard(self, rank: int, world_size: int) -> None:
        """Called before ``build_data`` in a training job's DDP ranks: this
        process is rank ``rank`` of ``world_size``. A task that can read only
        its share of the data (the VAE decodes only its shard of the audio
        files) remembers it and returns ``TaskData(sharded=True)``. The
        default does nothing: every rank reads everything (classification
        decodes lazily per sample, so it costs nothing to hold every index).
        Never called for the one-process preflight and evaluation."""
        return None

    @abstractmethod
    def build_data(self) -> TaskData:
        """Open ``config.data``, split it (from ``config.seed``), and return the
        splits. Unreadable files are reported, not raised.

        Raises:
            trainpipe_trainer.data.DataSourceError: the source cannot be opened.
        """

    @abstractmethod
    def build_model(self, data: TaskData) -> nn.Module:
        """A model for ``config.model.name``.

        Raises:
            ValueError: the name is not in the task's registry.
        """

    def setup(self, device: torch.device) -> None:
        """Called once the training device is known (move buffers there)."""
        self.device = device

    def check_batch(self, batch: Any) -> str | None:
        """Preflight: what is wrong with one real batch (labels out of range,
        a wrong shape), or None."""
        return None

    def checkpoint_meta(self) -> dict[str, Any]:
        """Stored in every checkpoint (e.g. the class names)."""
        return {}

    # --------------------------------------------------------------- steps
    @abstractmethod
    def training_step(self, model: nn.Module, batch: Any, epoch_progress: float) -> StepOutput:
        """Forward one training batch (already on ``self.device``) under the
        engine's autocast. ``epoch_progress``: fractional epochs done (for
        schedules such as KL annealing)."""

    @abstractmethod
    def validation_step(self, model: nn.Module, batch: Any) -> tuple[dict[str, float], int]:
        """Sums and sample count of one validation batch (no grad, eval mode);
        the sums include ``loss_sum`` (the batch's loss times its size)."""

    @abstractmethod
    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float | None]:
        """The epoch's metrics from the summed train and val sums (each with
        ``count`` and ``loss_sum``): at least ``train_loss`` and ``val_loss``,
        then the task's own by name (``val_acc``, ``val_recon``, ...)."""

    def validation_start(self) -> None:
        """Before an epoch's validation batches (reset per-epoch state)."""
        return None

    def validation_end(self, ctx: DistContext) -> None:
        """After them, on every rank (a collective: reduce per-epoch state)."""
        return None

    def epoch_artifacts(self, model: nn.Module, epoch: int, run_dir: Path, final: bool) -> list[PreviewRecord]:
        """Rank 0, after an epoch is recorded: write the epoch's artifacts
        (a confusion matrix, audio previews). ``final``: the last epoch."""
        return []

    def describe_epoch(self, metrics: dict[str, float | None]) -> str:
        """The task's part of the ``EPOCH`` log line."""
        return " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                        if v is not None and k not in ("train_loss", "val_loss"))

    # -------------------------------------------------------- finalization
    def check_checkpoint(self, checkpoint: Path, state: dict[str, Any], data: TaskData) -> None:
        """Refuse a checkpoint that cannot be evaluated on ``data`` (raise a
        ValueError saying why); called before its weights are loaded."""
        return None

    def model_mismatch_detail(self) -> str:
        """Added to the error when a checkpoint's weights do not fit the model."""
        return ""

    def describe_evaluation(self, evaluation: TestEvaluation) -> str:
        """One line for the evaluate log."""
        return ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in evaluation.metrics.items())

    def evaluate(self, model: nn.Module, data: TaskData, run_dir: Path, state: dict[str, Any]) -> EvaluatedModel:
        """Evaluate ``model`` (weights loaded) once on ``data.test``."""
        raise NotImplementedError(f"task {self.name!r} has no test evaluation")

    def export(self, evaluated: EvaluatedModel, run_dir: Path, formats: list[str]) -> ExportReport:
        """Export the evaluated model in ``formats`` and check parity."""
        raise NotImplementedError(f"task {self.name!r} has no export")


def batch_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (a tensor, or a tuple/list/dict of them) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: batch_to(v, device) for k, v in batch.items()}
    return batch


def int_or_none(value: object) -> int | None:
    """A checkpoint's recorded number as an int, or None when absent or not one."""
    try:
        return None if value is None else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def float_or_none(value: object) -> float | None:
    """A checkpoint's recorded number as a float, or None when absent or not one."""
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
