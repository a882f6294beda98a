"""Launchers: how the workers of one job start. Each ends with the evidence
that rank 0 wrote (or, when no worker got that far, evidence of the failure).

- in-process: one worker, this process (signals handled here);
- torch DDP: ``resources.workers`` processes on this machine, gloo on CPU;
- Ray Train: a TorchTrainer whose workers run the same ``run_job``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainpipe_trainer.contract.evidence import Evidence, ExceptionInfo
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import PreflightReport

if TYPE_CHECKING:
    from trainpipe_trainer.evaluate import EvaluateJobResult

log = logging.getLogger("trainpipe.train")


def launch(config: JobConfig) -> Evidence | PreflightReport | EvaluateJobResult:
    """Prepare the run directory and start the job's workers.

    ``action: train`` returns the evidence. ``preflight`` and ``evaluate`` are
    one-process jobs run here, in this process (no Ray Train: submitted as a
    Ray job, the driver runs them), returning their report / result; they
    never touch checkpoints, so ``fresh`` does not apply to them.

    ``fresh`` is applied here, once, never by a (possibly restarted) worker.
    """
    from trainpipe_trainer.engine import checkpoint as ckpt
    from trainpipe_trainer.job import STOP_FILE

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.yaml").write_text(config.to_yaml(), encoding="utf-8")
    if config.action == "preflight":
        from trainpipe_trainer.preflight import run_preflight

        return run_preflight(config)
    if config.action == "evaluate":
        from trainpipe_trainer.evaluate import run_evaluate_job

        return run_evaluate_job(config)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    (run_dir / "evidence.json").unlink(missing_ok=True)
    if config.fresh:
        ckpt.discard_checkpoints(run_dir / "checkpoints")
        shutil.rmtree(ray_storage_path(config) / ray_run_name(config), ignore_errors=True)
    if config.ray.enabled:
        return launch_ray(config)
    if config.resources.workers > 1:
        return launch_ddp(config)
    return launch_in_process(config)


def _stop_signal(config: JobConfig) -> Any:
    from trainpipe_trainer.engine.stop import StopSignal, install_signal_handlers
    from trainpipe_trainer.job import STOP_FILE

    stop = StopSignal(stop_file=Path(config.run_dir) / STOP_FILE)
    install_signal_handlers(stop)
    return stop


def launch_in_process(config: JobConfig) -> Evidence:
    from trainpipe_trainer.job import run_job

    return run_job(config, stop=_stop_signal(config))


# ---------------------------------------------------------------- torch DDP
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, config_json: str, port: int, world_size: int) -> None:
    import torch
    import torch.distributed as dist

    from trainpipe_trainer.job import run_job

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if torch.cuda.is_available() and config_gpus(config_json) else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        config = JobConfig.model_validate_json(config_json)
        run_job(config, stop=_stop_signal(config))
    finally:
        dist.destroy_process_group()


def config_gpus(config_json: str) -> bool:
    return JobConfig.model_validate_json(config_json).resources.gpus_per_worker > 0


def launch_ddp(config: JobConfig) -> Evidence:
    import torch.multiprocessing as mp

    _stop_signal(config)  # SIGTERM here writes the stop file the workers poll
    world = config.resources.workers
    try:
        mp.spawn(_ddp_worker, args=(config.model_dump_json(), _free_port(), world), nprocs=world, join=True)
    except Exception as exc:  # noqa: BLE001 - a dead worker becomes evidence
        return read_or_failed_evidence(config, exc)
    return read_or_failed_evidence(config, None)


# ---------------------------------------------------------------- Ray Train
def ray_storage_path(config: JobConfig) -> Path:
    return Path(config.ray.storage_path or Path(config.run_dir).resolve() / "ray")


def ray_run_name(config: JobConfig) -> str:
    return config.ray.run_name or config.name


def _ray_worker_loop(config_dict: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: the same run_job, resuming from
    Ray's checkpoint when a restarted run has one, reporting each epoch."""
    import ray.train

    from trainpipe_trainer.job import run_job

    config = JobConfig.model_validate(config_dict)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    ckpt_dir = Path(config.run_dir) / "checkpoints"

    def report(record: Any) -> None:
        metrics = {"epoch": record.num, "train_loss": record.train_loss, "val_loss": record.val_loss,
                   "val_acc": record.val_acc}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as staging:
            for name in ("last_model.pt", "last_model.pt.sha256"):
                if (ckpt_dir / name).exists():
                    shutil.copy2(ckpt_dir / name, Path(staging) / name)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging))

    restored = ray.train.get_checkpoint()
    if restored is None:
        run_job(config, on_epoch=report)
        return
    with restored.as_directory() as folder:
        run_job(config, on_epoch=report, resume_dir=Path(folder))


def launch_ray(config: JobConfig) -> Evidence:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        # No address anywhere: start a Ray of our own ("local"). Left to
        # None, Ray would join whatever cluster /tmp/ray last recorded,
        # possibly one that is gone or belongs to someone else.
        address = config.ray.address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, log_to_driver=True)
    _stop_signal(config)  # after ray.init, which installs a SIGTERM handler of its own
    res = config.resources
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    trainer = TorchTrainer(
        _ray_worker_loop,
        train_loop_config=config.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=res.workers, use_gpu=res.gpus_per_worker > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=ray_run_name(config),
            storage_path=str(ray_storage_path(config)),
            failure_config=FailureConfig(max_failures=config.ray.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray raises its own failure types
        return read_or_failed_evidence(config, exc)
    finally:
        # Shut Ray down here, not in its exit hook: the process's exit code
        # (75 for "interrupted, resumable") must not depend on how that goes.
        ray.shutdown()
    return read_or_failed_evidence(config, None)


def read_or_failed_evidence(config: JobConfig, error: BaseException | None) -> Evidence:
    """The evidence rank 0 wrote; when there is none (every worker died before
    writing it), evidence of that failure, written so the gate can read it."""
    path = Path(config.run_dir) / "evidence.json"
    if path.exists():
        return Evidence.read(path)
    message = f"{type(error).__name__}: {error}" if error else "no worker wrote evidence.json"
    evidence = Evidence(
        job_name=config.name,
        config_hash=config.config_hash(),
        status="failed",
        completed=False,
        reason=f"the job's workers ended without evidence: {message}",
        epochs_planned=config.train.epochs,
        exception=ExceptionInfo(type=type(error).__name__ if error else "MissingEvidence",
                                message=str(error or message), traceback=""),
    )
    evidence.timings.finished_at = datetime.now(timezone.utc).isoformat()
    evidence.write(path)
    return evidence
