"""One training job on one rank: build data and model from the job config,
run the engine, and (rank 0) write environment.json, data_report.json and
evidence.json. Used unchanged by the local launcher and by Ray Train workers.

The run directory::

    job.yaml  environment.json  data_report.json  evidence.json
    logs/training.log  logs/metrics.json  plots/confusion_matrix_epoch_NNN.png
    checkpoints/{best_model.pt,last_model.pt,checkpoint_epoch_N.pt}

and, when ``tracking`` is configured, ``wandb/`` (an offline W&B run) and
``tracking_status.json`` (only when a tracking server could not be reached).
"""

from __future__ import annotations

import json
import logging
import random
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainpipe_trainer.contract.evidence import (
    EpochRecord,
    Evidence,
    ExceptionInfo,
    RankGpus,
    Timings,
)
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.engine import checkpoint as ckpt
from trainpipe_trainer.engine.distributed import DistContext, current_context
from trainpipe_trainer.engine.environment import write_environment
from trainpipe_trainer.engine.gpu_identity import describe as describe_gpus
from trainpipe_trainer.engine.gpu_identity import gather_rank_gpus
from trainpipe_trainer.engine.gpu_monitor import GpuMonitor, GpuSample, format_sample
from trainpipe_trainer.engine.loop import Engine, TrainingParts
from trainpipe_trainer.engine.nan_guard import NonFiniteTrainingError
from trainpipe_trainer.engine.stop import StopSignal, TrainingInterrupted
from trainpipe_trainer.engine.telemetry import TrainingTelemetry
from trainpipe_trainer.engine.training_log import setup_training_log

log = logging.getLogger("trainpipe.train")

STOP_FILE = "STOP"


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_parts(config: JobConfig, write_report_to: Path | None, ctx: DistContext | None = None) -> TrainingParts:
    """The task, its datasets and model from the config (the data report is
    written first, so it exists even when building the model fails).

    ``ctx``: this process's place in the job; the task is told it
    (``Task.shard``) before reading data, so it may read only its share.
    With sharded data, rank 0's report covers rank 0's share (it says so)."""
    from trainpipe_trainer.tasks import resolve_task

    task = resolve_task(config)
    if ctx is not None:
        task.shard(ctx.rank, ctx.world_size)
    data = task.build_data()
    if write_report_to is not None and data.report is not None:
        data.report.write(write_report_to)
    model = task.build_model(data)
    return TrainingParts(model=model, train_set=data.train, val_set=data.val, task=task, sharded=data.sharded)


def run_job(
    config: JobConfig,
    *,
    parts: TrainingParts | None = None,
    stop: StopSignal | None = None,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    resume_dir: Path | None = None,
    telemetry: TrainingTelemetry | None = None,
) -> Evidence:
    """Train as configured and return the evidence (written to
    ``evidence.json`` by rank 0). Never raises for a training failure: the
    failure is the evidence's ``status``/``exception``. A ``telemetry`` passed
    in stays open (its owner closes it); one created here for
    ``metricsPort`` is closed at the end."""
    run_dir = Path(config.run_dir)
    ctx = current_context(use_gpu=config.resources.gpus_per_worker > 0 or torch.cuda.is_available())
    setup_training_log(run_dir / "logs" if ctx.is_main else None, ctx.rank)
    stop = stop or StopSignal(stop_file=run_dir / STOP_FILE)
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    seeds = {"python": config.seed, "numpy": config.seed, "torch": config.seed, "rank_offset": ctx.rank}
    seed_everything(config.seed, config.deterministic)
    if ctx.is_main:
        write_environment(run_dir / "environment.json", seeds)
    gpus = gather_rank_gpus(ctx.rank, ctx.world_size, ctx.device)  # every rank: a collective
    if ctx.is_main:
        log.info("Devices: %s", describe_gpus(gpus))

    owns_telemetry = telemetry is None
    monitor = engine = tracker = None
    status, reason, exc_info = "failed", "", None
    try:
        if parts is None:
            parts = build_parts(config, run_dir / "data_report.json" if ctx.is_main else None, ctx)
        torch.manual_seed(config.seed + ctx.rank)  # per-rank dropout streams after identical init
        if ctx.is_main and telemetry is None and config.metrics_port is not None:
            telemetry = TrainingTelemetry(labels={"job": config.name, **config.labels})
            try:
                port = telemetry.serve(config.metrics_port)
                log.info("Serving trainpipe_* metrics on port %d", port)
            except OSError as exc:  # another job on this node holds the port: train anyway
                log.warning("Not serving trainpipe_* metrics: port %d: %s", config.metrics_port, exc)
        if ctx.is_main and ctx.device.type == "cuda":
            monitor = _start_gpu_monitor(ctx, telemetry)
        if ctx.is_main and config.tracking is not None:
            tracker = _start_tracking(config)
        def after_epoch(record: EpochRecord) -> None:
            if ctx.is_main and engine is not None:
                _write_metrics_json(run_dir, engine.progress.history)
            if on_epoch is not None:
                on_epoch(record)

        engine = Engine(
            config, parts, ctx, stop=stop, telemetry=telemetry, tracker=tracker, on_step=on_step,
            on_epoch=after_epoch, resume_dir=resume_dir,
            gpu_window=monitor.take_window if monitor is not None else None,
        )
        status = engine.fit()
        reason = "early stopping: val_loss stopped improving" if status == "early_stopped" else "reached the final epoch"
    except TrainingInterrupted as exc:
        status, reason = "interrupted", str(exc)
    except NonFiniteTrainingError as exc:
        status, reason, exc_info = "failed", str(exc), _exception(exc)
        log.error("Training failed: %s", exc)
    except Exception as exc:  # noqa: BLE001 - every failure must become evidence
        status, reason, exc_info = "failed", f"{type(exc).__name__}: {exc}", _exception(exc)
        log.exception("Training failed")
    finally:
        if monitor is not None:
            monitor.stop()
        if telemetry is not None and owns_telemetry:
            telemetry.close()

    evidence = _evidence(config, ctx, engine, status, reason, exc_info, started, started_at, monitor, gpus)
    if ctx.is_main:
        evidence.write(run_dir / "evidence.json")
        _write_metrics_json(run_dir, evidence.epochs)
        if evidence.epochs:
            from trainpipe_trainer.engine.curves import save_learning_curves

            try:
                panel = engine.task.curves_panel if engine is not None else None
                save_learning_curves(evidence.epochs, run_dir / "learning_curves.png", panel)
            except Exception:  # noqa: BLE001 - a plot never fails a finished job
                log.warning("learning_curves.png not written", exc_info=True)
    if tracker is not None:
        tracker.finish(evidence)
    return evidence


def _start_tracking(config: JobConfig) -> Any:
    """The job's MLflow/W&B reporting (rank 0), started; None when none is configured."""
    from trainpipe_trainer.tracking.job_tracker import JobTracker

    tracker = JobTracker.from_config(config)
    if tracker is not None:
        tracker.start()
    return tracker


GPU_LOG_EVERY_SAMPLES = 10


def _start_gpu_monitor(ctx: DistContext, telemetry: Any) -> GpuMonitor:
    """Sample NVML each second; a "GPU Util" log line every 10 samples."""
    seen = 0

    def on_sample(sample: GpuSample) -> None:
        nonlocal seen
        seen += 1
        if seen % GPU_LOG_EVERY_SAMPLES == 1:
            log.info(format_sample(sample))
        if telemetry is not None:
            telemetry.on_gpu(sample.util_percent, sample.memory_used_bytes, sample.device)

    monitor = GpuMonitor(interval_s=1.0, device_index=ctx.local_rank, on_sample=on_sample)
    monitor.start()
    return monitor


def _exception(exc: BaseException) -> ExceptionInfo:
    return ExceptionInfo(
        type=type(exc).__name__, message=str(exc), traceback="".join(traceback.format_exception(exc))
    )


def _write_metrics_json(run_dir: Path, epochs: list[EpochRecord]) -> None:
    path = run_dir / "logs" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"epochs": [e.model_dump() for e in epochs]}, indent=2), encoding="utf-8")
    tmp.replace(path)


def _evidence(
    config: JobConfig,
    ctx: DistContext,
    engine: Engine | None,
    status: str,
    reason: str,
    exc_info: ExceptionInfo | None,
    started: float,
    started_at: datetime,
    monitor: GpuMonitor | None,
    gpus: list[RankGpus] | None = None,
) -> Evidence:
    run_dir = Path(config.run_dir)
    history = engine.progress.history if engine else []
    ckpt_dir = run_dir / "checkpoints"
    checks = {name: ckpt.inspect_checkpoint(ckpt_dir / f"{name}_model.pt") for name in ("best", "last")}
    periodic = sorted(p.name for p in ckpt_dir.glob("checkpoint_epoch_*.pt")) if ckpt_dir.exists() else []
    gpu_mean = monitor.summary().get("util_mean") if monitor is not None else None
    best = min(history, key=lambda r: r.val_loss, default=None)
    val_accs = [a for a in (r.metric("val_acc") for r in history) if a is not None]
    log_text = (run_dir / "logs" / "training.log")
    environment = {}
    if (run_dir / "environment.json").exists():
        environment = json.loads((run_dir / "environment.json").read_text(encoding="utf-8"))
    return Evidence(
        job_name=config.name,
        task=config.task,
        config_hash=config.config_hash(),
        status=status,
        completed=status in ("completed", "early_stopped"),
        reason=reason,
        epochs_planned=config.train.epochs,
        epochs=history,
        initial_train_loss=history[0].train_loss if history else None,
        final_train_loss=history[-1].train_loss if history else None,
        best_val_loss=best.val_loss if best else None,
        best_val_acc=max(val_accs, default=None),
        best_epoch=best.num if best else None,
        skipped_steps_total=engine.guard.total if engine else 0,
        resumed_from_epoch=engine.resumed_from[0] if engine and engine.resumed_from else None,
        resumed_from_step=engine.resumed_from[1] if engine and engine.resumed_from else None,
        checkpoints=checks,
        periodic_checkpoints=periodic,
        environment=environment,
        timings=Timings(
            total_seconds=time.perf_counter() - started,
            epoch_seconds=[r.epoch_seconds for r in history],
            checkpoint_save_seconds=engine.checkpoint_seconds if engine else [],
            started_at=started_at.isoformat(),
            finished_at=datetime.now(timezone.utc).isoformat(),
        ),
        gpu_util_mean=gpu_mean,
        gpus=gpus or [],
        previews=engine.progress.previews if engine else [],
        world_size=ctx.world_size,
        log_path=str(log_text.relative_to(run_dir)),
        exception=exc_info,
    )
