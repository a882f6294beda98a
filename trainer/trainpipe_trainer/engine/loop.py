"""The training loop, whole: one process or one DDP rank, the same code.

Read ``Engine.fit`` top to bottom: resume, then per epoch train (with
accumulation, clipping, the non-finite guard and stop requests at optimizer-
step boundaries), validate, record, checkpoint, maybe stop early.

Resume is exact: the sampler's order depends only on (seed, epoch) (with
per-rank data, ``TrainingParts.sharded``: on (seed, epoch, rank)), each
sample's augmentation only on (seed, epoch, index), the DataLoader draws from
its own generator, and a checkpoint holds every RNG state plus the partial
sums of the epoch in progress. A run interrupted mid-epoch and resumed
reports the same per-epoch losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from trainpipe_trainer.contract.evidence import EpochRecord, PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.engine import checkpoint as ckpt
from trainpipe_trainer.engine.accumulator import EpochSums
from trainpipe_trainer.engine.distributed import (
    DistContext,
    all_gather_int,
    all_reduce_sums,
    any_rank,
    barrier,
)
from trainpipe_trainer.engine.heartbeat import HeartbeatWriter
from trainpipe_trainer.engine.nan_guard import NonFiniteGuard
from trainpipe_trainer.engine.optim import build_optimizer, build_scheduler
from trainpipe_trainer.engine.precision import resolve_precision
from trainpipe_trainer.engine.rng import capture_rng_state, restore_rng_state
from trainpipe_trainer.engine.sampler import (
    LocalShardSampler,
    ResumableDistributedSampler,
    ShardSampler,
)
from trainpipe_trainer.engine.stop import StopSignal, TrainingInterrupted
from trainpipe_trainer.engine.training_log import LOGGER_NAME
from trainpipe_trainer.tasks.base import Task, batch_to

log = logging.getLogger(LOGGER_NAME)

OVERFIT_GAP_WARN = 0.20


class ConfigMismatchError(ValueError):
    """The run directory holds checkpoints written for a different job config."""


@dataclass
class TrainingParts:
    """What the loop trains: built from the job config by ``job.py``, or by a
    test that wants to inject a model or a dataset. The task says what a
    batch's loss and metrics are."""

    model: nn.Module
    train_set: Dataset
    val_set: Dataset
    task: Task
    #: the sets hold only this rank's share (``TaskData.sharded``)
    sharded: bool = False


@dataclass
class Progress:
    """Where training stands; exactly what a checkpoint must restore."""

    completed_epochs: int = 0
    batches_done: int = 0  # in the epoch in progress
    global_step: int = 0  # optimizer steps taken (skipped ones excluded)
    epoch_sums: EpochSums = field(default_factory=EpochSums)
    epoch_seconds_before: float = 0.0  # time spent in this epoch before an interruption
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    previews: list[PreviewRecord] = field(default_factory=list)


def local_shard_sampler(local_size: int, ctx: DistContext, seed: int) -> LocalShardSampler:
    """This rank's sampler over a pre-sharded train set, padded to the
    longest rank's size (a collective: every rank calls it).

    Raises:
        ValueError: on every rank, when some rank's shard is empty while
            another's is not (there is nothing to pad the empty one from).
    """
    sizes = all_gather_int(local_size, ctx)
    if max(sizes) > 0 and min(sizes) == 0:
        empty = [rank for rank, size in enumerate(sizes) if size == 0]
        raise ValueError(
            f"the sharded train split leaves rank(s) {empty} of {ctx.world_size} without a sample "
            f"(samples per rank: {sizes}): train with fewer workers or add files"
        )
    return LocalShardSampler(local_size, max(sizes), ctx.rank, seed)


class Engine:
    def __init__(
        self,
        config: JobConfig,
        parts: TrainingParts,
        ctx: DistContext,
        *,
        stop: StopSignal | None = None,
        telemetry: Any | None = None,
        tracker: Any | None = None,
        on_step: Callable[[int], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        resume_dir: Path | None = None,
        gpu_window: Callable[[], tuple[float | None, int | None]] | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.train
        self.ctx = ctx
        self.task = parts.task
        self.task.setup(ctx.device)
        self.stop = stop or StopSignal()
        self.telemetry = telemetry if ctx.is_main else None
        self.tracker = tracker if ctx.is_main else None  # tracking.job_tracker.JobTracker (rank 0)
        # Rank 0's GPU monitor (GpuMonitor.take_window): the epoch's mean
        # utilization and peak memory in its record; None on CPU, where the
        # record has neither.
        self.gpu_window = gpu_window if ctx.is_main else None
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.run_dir = Path(config.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume_dir = resume_dir
        self.config_hash = config.config_hash()

        self.raw_model = parts.model.to(ctx.device)
        self.model: nn.Module = self.raw_model
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.raw_model, device_ids=ids)
        self.precision = resolve_precision(self.cfg.amp, ctx.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.needs_scaler else None

        self.train_sampler: ResumableDistributedSampler | LocalShardSampler
        if parts.sharded and ctx.distributed:
            # Each rank holds its own shard: sample it whole, padded to the
            # longest shard (every rank runs the same batches, or DDP hangs);
            # validate each rank's own samples once (the sums add up).
            self.train_sampler = local_shard_sampler(len(parts.train_set), ctx, config.seed)  # type: ignore[arg-type]
            val_sampler = ShardSampler(parts.val_set, 1, 0)
        else:
            self.train_sampler = ResumableDistributedSampler(
                parts.train_set, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed
            )
            val_sampler = ShardSampler(parts.val_set, ctx.world_size, ctx.rank)
        self.train_loader = self._loader(parts.train_set, self.train_sampler)
        self.val_loader = self._loader(parts.val_set, val_sampler)
        self.batches_per_epoch = math.ceil(self.train_sampler.num_samples / config.data.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.cfg.grad_accum_steps)

        self.optimizer = build_optimizer(self.raw_model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch)
        self.guard = NonFiniteGuard(self.cfg.max_consecutive_nonfinite)
        self.progress = Progress()
        self.resumed_from: tuple[int, int] | None = None  # (completed epochs, batches done)
        self.checkpoint_seconds: list[float] = []
        self.last_grad_norm: float | None = None
        # heartbeat.json (rank 0): progress for the status, liveness for the watchdog.
        self.heartbeat = HeartbeatWriter(self.run_dir, self.cfg.epochs, self.steps_per_epoch) if ctx.is_main else None

    # ------------------------------------------------------------------ setup
    def _loader(self, dataset: Dataset, sampler: Any) -> DataLoader:
        data = self.config.data
        workers = data.num_workers
        return DataLoader(
            dataset,
            batch_size=data.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=data.pin_memory and self.ctx.device.type == "cuda",
            persistent_workers=workers > 0,
            # Its own generator: creating an iterator must not draw from the
            # global RNG, or a resumed run's dropout masks would shift.
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    # -------------------------------------------------------------------- fit
    def fit(self) -> str:
        """Train to the last epoch or an early stop; returns the status
        (``completed`` or ``early_stopped``).

        Raises:
            TrainingInterrupted: a stop was requested; a checkpoint was written.
            NonFiniteGuard's NonFiniteTrainingError: too many non-finite steps in a row.
            ConfigMismatchError: the run directory's checkpoints belong to another config.
        """
        self._resume()
        status = "completed"
        p = self.progress
        if self.heartbeat:
            self.heartbeat.started(p.global_step, p.completed_epochs, self._steps_in_epoch())
        for epoch in range(p.completed_epochs, self.cfg.epochs):
            started = time.perf_counter()
            train = self._train_epoch(epoch)
            val = self._validate()
            seconds = p.epoch_seconds_before + time.perf_counter() - started
            record = self._record_epoch(epoch, train, val, seconds)
            if self.ctx.is_main:
                p.previews += self.task.epoch_artifacts(
                    self.raw_model, epoch + 1, self.run_dir, final=epoch + 1 == self.cfg.epochs
                )
            improved = record.val_loss < p.best_val_loss
            if improved:
                p.best_val_loss, p.best_epoch = record.val_loss, epoch + 1
                p.epochs_without_improvement = 0
            else:
                p.epochs_without_improvement += 1
            p.completed_epochs, p.batches_done = epoch + 1, 0
            p.epoch_sums, p.epoch_seconds_before = EpochSums(), 0.0
            self._save_epoch_checkpoints(epoch + 1, record, improved)
            if self.heartbeat:
                self.heartbeat.epoch_end(p.global_step, p.completed_epochs, seconds)
            if self.tracker:
                self.tracker.on_epoch(record, p.previews)
            if self.on_epoch:
                self.on_epoch(record)
            if any_rank(self.stop.requested, self.ctx):
                # The epoch's checkpoints were just written: nothing more to save.
                log.warning("Interrupted (%s): checkpoint written at the end of epoch %d; run again to resume",
                            self.stop.reason, epoch + 1)
                raise TrainingInterrupted(self.stop.reason or "stop requested", epoch + 1, 0)
            if self.cfg.patience and p.epochs_without_improvement >= self.cfg.patience:
                log.info(
                    "Early stopping: val_loss has not improved for %d epochs (best %.4f at epoch %d)",
                    p.epochs_without_improvement, p.best_val_loss, p.best_epoch or 0,
                )
                status = "early_stopped"
                break
        barrier(self.ctx)
        if self.heartbeat:
            self.heartbeat.finished(p.global_step, p.completed_epochs)
        log.info("Training complete: %d epochs, best val_loss %.4f at epoch %s", p.completed_epochs, p.best_val_loss, p.best_epoch)
        return status

    # ----------------------------------------------------------------- resume
    def _resume(self) -> None:
        candidates = [ckpt.find_resume_checkpoint(folder) for folder in filter(None, [self.resume_dir, self.ckpt_dir])]
        found = max(
            (c for c in candidates if c),
            key=lambda c: (int(c[1]["epoch"]), int(c[1]["step_in_epoch"]), int(c[1]["global_step"])),
            default=None,
        )
        if found is None:
            return
        path, state = found
        if state.get("config_hash") != self.config_hash:
            raise ConfigMismatchError(
                f"{path} was written for another job config (config hash {state.get('config_hash')} "
                f"!= {self.config_hash}); start with --fresh to discard it, or use another run directory"
            )
        self.raw_model.load_state_dict(state["model_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        self.scheduler.load_state_dict(state["scheduler_state_dict"])
        if self.scaler is not None and state.get("scaler_state_dict"):
            self.scaler.load_state_dict(state["scaler_state_dict"])
        self.guard.load_state_dict(state["guard"])
        p = self.progress
        p.completed_epochs = int(state["epoch"])
        p.batches_done = int(state["step_in_epoch"])
        p.global_step = int(state["global_step"])
        p.best_val_loss = float(state["best_val_loss"])
        p.best_epoch = state["best_epoch"]
        p.epochs_without_improvement = int(state["epochs_without_improvement"])
        p.epoch_seconds_before = float(state["epoch_seconds_before"])
        p.history = [EpochRecord.model_validate(r) for r in state["metrics"]["history"]]
        p.previews = [PreviewRecord.model_validate(r) for r in state["metrics"].get("previews", [])]
        if self.ctx.is_main:
            p.epoch_sums = EpochSums(state["epoch_sums"])
        rng_states = state["rng_per_rank"]
        if len(rng_states) != self.ctx.world_size:
            log.warning(
                "resuming with %d workers from a checkpoint of %d: random streams differ from an uninterrupted run",
                self.ctx.world_size, len(rng_states),
            )
        restore_rng_state(rng_states[self.ctx.rank % len(rng_states)])
        self.resumed_from = (p.completed_epochs, p.batches_done)
        where = f"epoch {p.completed_epochs + 1}, step {p.batches_done}" if p.batches_done else f"the end of epoch {p.completed_epochs}"
        log.info("Resumed from %s (%s, global step %d)", path, where, p.global_step)
        if self.telemetry:
            self.telemetry.on_resume(p.completed_epochs)

    # ------------------------------------------------------------------ train
    def _train_epoch(self, epoch: int) -> EpochSums:
        p = self.progress
        accum = self.cfg.grad_accum_steps
        batch_size = self.config.data.batch_size
        self.train_sampler.set_epoch(epoch)
        self.train_sampler.set_start(p.batches_done * batch_size)
        self.model.train()
        window_start, window_samples = time.perf_counter(), 0
        step_start, step_samples = window_start, 0
        nonfinite_in_window = False
        micro = p.batches_done
        for batch in self.train_loader:
            micro += 1
            batch = batch_to(batch, self.ctx.device)
            at_boundary = micro % accum == 0 or micro == self.batches_per_epoch
            sync = contextlib.nullcontext()
            if self.ctx.distributed and not at_boundary:
                sync = self.model.no_sync()  # type: ignore[operator]
            with sync:
                with self.precision.autocast():
                    out = self.task.training_step(self.model, batch, epoch + micro / self.batches_per_epoch)
                loss_value = out.loss.item()
                if out.recorded_loss is not None and math.isfinite(loss_value):
                    loss_value = out.recorded_loss
                scaled = out.loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            window_samples += out.count
            step_samples += out.count
            if math.isfinite(loss_value):
                p.epoch_sums.add_batch(loss_value, out.count, out.sums)
            else:
                nonfinite_in_window = True
            if not at_boundary:
                continue
            self._optimizer_step(epoch, micro, loss_value, nonfinite_in_window)
            nonfinite_in_window = False
            p.batches_done = micro
            now = time.perf_counter()
            if self.telemetry:
                world_samples = step_samples * self.ctx.world_size
                self.telemetry.on_step(
                    loss_value, self.optimizer.param_groups[0]["lr"], self.last_grad_norm,
                    world_samples / max(now - step_start, 1e-9), world_samples, metrics=out.step_metrics,
                )
            if self.heartbeat:
                self.heartbeat.step(p.global_step, epoch, self._steps_in_epoch(), step_samples * self.ctx.world_size)
            if self.tracker:
                self.tracker.on_step(p.global_step, loss_value, self.optimizer.param_groups[0]["lr"],
                                     self.last_grad_norm, out.step_metrics)
            step_start, step_samples = now, 0
            if p.global_step % self.cfg.log_every_steps == 0:
                self._log_step(epoch, loss_value, window_samples * self.ctx.world_size / max(now - window_start, 1e-9),
                               out.step_metrics)
                window_start, window_samples = now, 0
            if self.on_step:
                self.on_step(p.global_step)
            if any_rank(self.stop.requested, self.ctx):
                self._save_interrupt_checkpoint(epoch)
                raise TrainingInterrupted(self.stop.reason or "stop requested", epoch, micro)
        return p.epoch_sums

    def _steps_in_epoch(self) -> int:
        """Optimizer steps done in the epoch in progress."""
        return math.ceil(self.progress.batches_done / self.cfg.grad_accum_steps)

    def _optimizer_step(self, epoch: int, micro: int, loss_value: float, nonfinite: bool) -> None:
        p = self.progress
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip_norm or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm))
        loss_for_guard = math.nan if nonfinite else loss_value
        if self.guard.should_skip(loss_for_guard, grad_norm, f"epoch {epoch + 1} batch {micro}"):
            log.warning(
                "Skipped step: non-finite %s at epoch %d batch %d (skipped %d in a row, %d in total)",
                "loss" if nonfinite else "gradient", epoch + 1, micro, self.guard.consecutive, self.guard.total,
            )
            p.epoch_sums["skipped"] += 1
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            if self.telemetry:
                self.telemetry.on_skip()
            return
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.global_step += 1
        p.epoch_sums["grad_norm_sum"] += grad_norm
        p.epoch_sums["steps"] += 1
        self.last_grad_norm = grad_norm

    def _log_step(self, epoch: int, loss: float, samples_per_second: float, extra: dict[str, float]) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        log.info(
            "step %d epoch %d loss=%.4f lr=%.3g grad_norm=%.3f samples/s=%.1f%s",
            self.progress.global_step, epoch + 1, loss, lr, self.last_grad_norm or 0.0, samples_per_second,
            "".join(f" {name}={value:.4g}" for name, value in extra.items()),
        )

    # --------------------------------------------------------------- validate
    @torch.no_grad()
    def _validate(self) -> EpochSums:
        self.raw_model.eval()
        self.task.validation_start()
        sums = EpochSums()
        for batch in self.val_loader:
            batch = batch_to(batch, self.ctx.device)
            with self.precision.autocast():
                batch_sums, count = self.task.validation_step(self.raw_model, batch)
            sums.add({**batch_sums, "count": count})
            if self.heartbeat:  # a long validation is progress too
                p = self.progress
                self.heartbeat.validating(p.global_step, p.completed_epochs, self._steps_in_epoch())
        sums = EpochSums(all_reduce_sums(sums.state_dict(), self.ctx))
        self.task.validation_end(self.ctx)
        return sums

    # ----------------------------------------------------------------- record
    def _record_epoch(self, epoch: int, local: EpochSums, val: EpochSums, seconds: float) -> EpochRecord:
        p = self.progress
        train = EpochSums(all_reduce_sums(local.state_dict(), self.ctx))
        seconds_all = [r.epoch_seconds for r in p.history] + [seconds]
        eta = (sum(seconds_all) / len(seconds_all)) * (self.cfg.epochs - epoch - 1)
        train_loss, val_loss = train.mean_loss, val.mean_loss
        loss_gap = (val_loss - train_loss) / train_loss if train_loss and math.isfinite(train_loss) else math.nan
        skipped = int(train["skipped"] / self.ctx.world_size)  # every rank counts each skip
        metrics = self.task.epoch_metrics(train.state_dict(), val.state_dict())
        gpu_util, gpu_memory = self.gpu_window() if self.gpu_window is not None else (None, None)
        record = EpochRecord(
            num=epoch + 1,
            train_loss=train_loss,
            val_loss=val_loss,
            lr=self.optimizer.param_groups[0]["lr"],
            epoch_seconds=seconds,
            eta_seconds=eta,
            samples_per_second=train.count / seconds if seconds > 0 else 0.0,
            loss_gap=loss_gap,
            skipped_steps=skipped,
            grad_norm_mean=train["grad_norm_sum"] / train["steps"] if train["steps"] else None,
            gpu_util_mean=gpu_util,
            gpu_memory_max_bytes=gpu_memory,
            **{k: v for k, v in metrics.items() if k not in ("train_loss", "val_loss")},
        )
        p.history.append(record)
        log.info(
            "EPOCH %d/%d train_loss=%.4f val_loss=%.4f %s "
            "lr=%.3g time=%.1fs eta=%.0fs samples/s=%.1f gap=%.1f%% skipped=%d",
            record.num, self.cfg.epochs, record.train_loss, record.val_loss, self.task.describe_epoch(metrics),
            record.lr, record.epoch_seconds, record.eta_seconds,
            record.samples_per_second, 100 * record.loss_gap, record.skipped_steps,
        )
        if record.loss_gap > OVERFIT_GAP_WARN:
            log.warning(
                "Overfitting warning: val_loss is %.0f%% above train_loss at epoch %d (warns over %.0f%%; training continues)",
                100 * record.loss_gap, record.num, 100 * OVERFIT_GAP_WARN,
            )
        if self.telemetry:
            self.telemetry.on_epoch(
                record.num, record.train_loss, record.val_loss,
                epoch_seconds=record.epoch_seconds, eta_seconds=record.eta_seconds, metrics=metrics,
            )
        return record

    # ------------------------------------------------------------- checkpoint
    def _state(self, val_loss: float | None, rng_per_rank: list[dict]) -> dict[str, Any]:
        p = self.progress
        return {
            "model_state_dict": self.raw_model.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "scheduler_state_dict": self.scheduler.state_dict(),
            "scaler_state_dict": self.scaler.state_dict() if self.scaler else {},
            "rng_per_rank": rng_per_rank,
            "epoch": p.completed_epochs,
            "step_in_epoch": p.batches_done,
            "global_step": p.global_step,
            "val_loss": val_loss,
            "best_val_loss": p.best_val_loss,
            "best_epoch": p.best_epoch,
            "epochs_without_improvement": p.epochs_without_improvement,
            "epoch_sums": p.epoch_sums.state_dict(),
            "epoch_seconds_before": p.epoch_seconds_before,
            "guard": self.guard.state_dict(),
            "metrics": {"history": [r.model_dump() for r in p.history],
                        "previews": [r.model_dump() for r in p.previews]},
            "config_hash": self.config_hash,
            **self.task.checkpoint_meta(),
            "world_size": self.ctx.world_size,
            "precision": self.precision.name,
        }

    def _gather_rng(self) -> list[dict]:
        mine = capture_rng_state()
        if not self.ctx.distributed:
            return [mine]
        gathered: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, mine)
        return gathered

    def _save(self, state: dict[str, Any], name: str) -> None:
        info = ckpt.save_checkpoint(state, self.ckpt_dir / name)
        self.checkpoint_seconds.append(info.seconds)
        if self.telemetry:
            self.telemetry.on_checkpoint(info.seconds)

    def _save_epoch_checkpoints(self, completed: int, record: EpochRecord, improved: bool) -> None:
        rng = self._gather_rng()
        if self.ctx.is_main:
            self._save(self._state(record.val_loss, rng), "last_model.pt")
            last = self.ckpt_dir / "last_model.pt"
            copies = (["best_model.pt"] if improved else []) + (
                [f"checkpoint_epoch_{completed}.pt"] if completed % self.cfg.checkpoint_every == 0 else []
            )
            for name in copies:  # the same state: link, don't serialize again
                self.checkpoint_seconds[-1] += ckpt.copy_checkpoint(last, self.ckpt_dir / name).seconds
            ckpt.apply_retention(self.ckpt_dir, keep=self.cfg.keep_periodic)
        barrier(self.ctx)

    def _save_interrupt_checkpoint(self, epoch: int) -> None:
        """Mid-epoch state into last_model.pt: rank 0 holds every rank's
        partial sums (summed) and RNG states, so a resume is exact."""
        p = self.progress
        p.epoch_sums = EpochSums(all_reduce_sums(p.epoch_sums.state_dict(), self.ctx))
        rng = self._gather_rng()
        if self.ctx.is_main:
            self._save(self._state(None, rng), "last_model.pt")
            log.warning(
                "Interrupted (%s): checkpoint written at epoch %d step %d; run again to resume",
                self.stop.reason, epoch + 1, p.batches_done,
            )
        barrier(self.ctx)
