"""The engine's side of tracking: what a training job hands its sinks, and
under which names.

Rank 0 of a job builds one :class:`JobTracker` from ``JobConfig.tracking``
(``JobTracker.from_config``; None when nothing is configured, so an
untracked job pays nothing) and calls it at four points: ``start`` before
training, ``on_step`` after each optimizer step, ``on_epoch`` after each
epoch's checkpoint, ``finish`` once evidence.json and learning_curves.png
are written. None of these raises.

Names (the same in MLflow and W&B):

- per epoch: every number of the epoch's ``metrics.json`` entry under its
  own name (``train_loss``, ``val_loss``, ``lr``, ``samples_per_second``,
  the task's ``val_acc``, ``val_top5``, ``val_recon``, ``val_kl``,
  ``kl_weight``, ...), except ``grad_norm_mean`` -> ``grad_norm`` and
  ``gpu_util_mean`` -> ``gpu_utilization``; ``num`` is the step and
  ``eta_seconds`` is left out; values that are not finite are skipped;
- per step, every ``stepEvery`` optimizer steps: ``step/train_loss``,
  ``step/lr``, ``step/grad_norm`` and the task's step metrics as
  ``step/<name>`` (the VAE's ``step/recon_loss``, ``step/kl_loss``,
  ``step/kl_weight``);
- params: the job config flattened with dots, as in job.yaml
  (``train.lr``, ``data.batchSize``, ``model.name``), plus ``config_hash``;
  ``tracking`` itself is not a param.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from trainpipe_trainer.contract.evidence import EpochRecord, Evidence, PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.tracking.sink import MediaFile, Sink, SinkFanout

log = logging.getLogger("trainpipe.train")

STEP_PREFIX = "step/"
RENAMED = {"grad_norm_mean": "grad_norm", "gpu_util_mean": "gpu_utilization"}
NOT_METRICS = frozenset({"num", "eta_seconds"})
#: What classification's ``epoch_artifacts`` draws, relative to the run directory.
CONFUSION_PNG = "plots/confusion_matrix_epoch_{epoch:03d}.png"
CHECKPOINTS = ("best_model.pt", "last_model.pt")

F = TypeVar("F", bound=Callable[..., Any])


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    """The epoch's metrics by tracked name (see the module doc)."""
    out: dict[str, float] = {}
    for key, value in record.model_dump().items():
        if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[RENAMED.get(key, key)] = float(value)
    return out


def step_metrics(train_loss: float, lr: float, grad_norm: float | None,
                 extra: Mapping[str, float] | None = None) -> dict[str, float]:
    """One step's metrics by tracked name (``step/...``); non-finite values skipped."""
    values: dict[str, Any] = {"train_loss": train_loss, "lr": lr, "grad_norm": grad_norm, **(extra or {})}
    return {f"{STEP_PREFIX}{key}": float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings to ``a.b.c`` keys; leaves as text (strings as they
    are, anything else as JSON: ``0.001``, ``true``, ``null``, ``["hflip"]``)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value, sort_keys=True)}


def job_params(config: JobConfig) -> dict[str, str]:
    """The params a job's run records: its config flattened, and its hash."""
    params = flatten(config.model_dump(mode="json", by_alias=True, exclude={"tracking"}))
    params["config_hash"] = config.config_hash()
    return params


def epoch_media(run_dir: Path, epoch: int, previews: Sequence[PreviewRecord]) -> list[MediaFile]:
    """The files drawn for ``epoch``: the confusion matrix (when the task drew
    one) and the epoch's audio previews (wav, and the mel png)."""
    media: list[MediaFile] = []
    confusion = run_dir / CONFUSION_PNG.format(epoch=epoch)
    if confusion.is_file():
        media.append(MediaFile(path=confusion, key="confusion_matrix", artifact_path="confusion_matrix",
                               name=f"epoch_{epoch}.png", caption=f"validation, epoch {epoch}"))
    for preview in previews:
        if preview.epoch != epoch:
            continue
        stem = f"previews/{preview.kind}_{preview.index}"
        wav = run_dir / preview.wav
        folder = f"previews/{wav.parent.name}"
        caption = f"{preview.kind} {preview.index}, epoch {epoch}"
        media.append(MediaFile(path=wav, key=stem, artifact_path=folder, name=wav.name, kind="audio",
                               caption=caption, sample_rate=preview.sample_rate))
        if preview.png:
            png = run_dir / preview.png
            media.append(MediaFile(path=png, key=f"{stem}_mel", artifact_path=folder, name=png.name,
                                   caption=caption))
    return media


def _never_raises(method: F) -> F:
    """Tracking never breaks training: a bug here is logged, not raised."""

    @functools.wraps(method)
    def guarded(self: JobTracker, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001
            log.warning("Tracking: %s failed", method.__name__, exc_info=True)
            return None

    return guarded  # type: ignore[return-value]


class JobTracker:
    """One job's reporting (rank 0): names, media and the step filter, over a
    :class:`SinkFanout`."""

    def __init__(self, config: JobConfig, sinks: Sequence[Sink], **fanout_options: Any) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.step_every = config.tracking.step_every if config.tracking else 50
        self.log_checkpoints = bool(config.tracking and config.tracking.log_checkpoints)
        self.fanout = SinkFanout(sinks, self.run_dir, **fanout_options)
        self.last_step = 0

    @classmethod
    def from_config(cls, config: JobConfig, env: Mapping[str, str] | None = None) -> JobTracker | None:
        """The sinks ``config.tracking`` names, credentials read once from
        ``env`` (default: this process's environment); None when there are none."""
        tracking = config.tracking
        if tracking is None or (tracking.mlflow is None and tracking.wandb is None):
            return None
        environ = os.environ if env is None else env
        sinks: list[Sink] = []
        try:
            if tracking.mlflow is not None:
                from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials
                from trainpipe_trainer.tracking.mlflow_sink import MlflowSink

                sinks.append(MlflowSink(tracking.mlflow, MlflowCredentials.from_env(environ)))
            if tracking.wandb is not None:
                from trainpipe_trainer.tracking.wandb_sink import WandbSink

                # The control plane's tags already carry the prefix (trainpipe.phase, ...).
                tags = {key if key.startswith("trainpipe.") else f"trainpipe.{key}": value
                        for key, value in tracking.tags.items()}
                sinks.append(WandbSink(tracking.wandb, Path(config.run_dir), tags, env=environ))
        except Exception:  # noqa: BLE001 - a tracking setup problem never stops training
            log.warning("Tracking: not set up; training continues untracked", exc_info=True)
        return cls(config, sinks) if sinks else None

    @_never_raises
    def start(self) -> None:
        self.fanout.start(job_params(self.config))

    @_never_raises
    def on_step(self, step: int, train_loss: float, lr: float, grad_norm: float | None,
                extra: Mapping[str, float] | None = None) -> None:
        """After an optimizer step (a skipped step repeats the step number: ignored)."""
        if step % self.step_every or step <= self.last_step:
            return
        self.last_step = step
        metrics = step_metrics(train_loss, lr, grad_norm, extra)
        if metrics:
            self.fanout.step(step, metrics)

    @_never_raises
    def on_epoch(self, record: EpochRecord, previews: Sequence[PreviewRecord] = ()) -> None:
        """After the epoch's checkpoint: its metrics and the files drawn for it."""
        self.fanout.epoch(record.num, epoch_metrics(record), epoch_media(self.run_dir, record.num, previews))

    @_never_raises
    def finish(self, evidence: Evidence) -> None:
        """At the end: learning_curves.png, the checkpoints when asked, the status."""
        curves = self.run_dir / "learning_curves.png"
        if curves.is_file():
            self.fanout.artifact(curves, "")
        if self.log_checkpoints:
            for name in CHECKPOINTS:
                path = self.run_dir / "checkpoints" / name
                if path.is_file():
                    self.fanout.artifact(path, "checkpoints")
        self.fanout.finish(evidence.status)
