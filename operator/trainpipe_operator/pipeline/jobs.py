"""From the pipeline spec and the current training settings to the job
config a phase's job runs. One function, so every phase's job is built the
same way and differs only where the phase says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainpipe_operator.diagnosis.settings import TrainSettings
from trainpipe_operator.spec.pipeline import PipelineSpec, VaeSpec
from trainpipe_trainer.contract.job_config import JobConfig


def baseline_settings(spec: PipelineSpec) -> TrainSettings:
    """Phase 2's settings: the spec's baseline section and data/model (the
    task's default model when the spec names none), and for the vae task its
    loss settings (``spec.vae``, the defaults when absent)."""
    b = spec.baseline
    vae = spec.vae or VaeSpec()
    return TrainSettings(
        lr=b.lr, optimizer=b.optimizer, weight_decay=b.weight_decay, scheduler=b.scheduler,
        grad_clip_norm=b.grad_clip_norm,
        epochs=b.epochs, batch_size=spec.data.batch_size, num_workers=spec.data.num_workers,
        augment=list(spec.data.augment), image_size=spec.data.image_size, model_name=spec.model_name,
        task=spec.task,
        latent_dim=vae.latent_dim, beta=vae.beta, free_bits=vae.free_bits, kl_schedule=vae.kl_anneal.schedule,
        kl_warmup_epochs=vae.kl_anneal.warmup_epochs, kl_cycles=vae.kl_anneal.cycles,
    )


def build_job(
    pipeline: str,
    phase: str,
    spec: PipelineSpec,
    settings: TrainSettings,
    run_dir: Path,
    *,
    runtime: str,
    action: str = "train",
    evaluate: dict[str, Any] | None = None,
) -> JobConfig:
    """The job config for one job of one phase.

    ``runtime``: ``local`` trains without Ray (one process, or torch DDP when
    workers > 1); ``ray`` runs inside a Ray job, so the trainer uses Ray Train
    on the cluster the job was submitted to.
    """
    base: dict[str, Any] = {
        "name": f"{pipeline}-{phase.lower()}",
        "action": action,
        "runDir": str(run_dir),
        "seed": spec.seed,
        "task": spec.task,
        "data": {"source": spec.data.source, "split": spec.data.split.dump()},
        "model": {"name": spec.model_name, "pretrained": spec.model.pretrained},
        "resources": {
            "workers": spec.resources.workers,
            "gpusPerWorker": spec.resources.gpus_per_worker,
            "cpusPerWorker": spec.resources.cpus_per_worker,
        },
        "ray": {"enabled": runtime != "local", "runName": f"{pipeline}-{phase.lower()}"},
        "labels": {"pipeline": pipeline, "phase": phase.lower()},
    }
    if spec.custom_task is not None:  # the job runs the task; its metrics are the control plane's
        base["customTask"] = {"entrypoint": spec.custom_task.entrypoint, "options": spec.custom_task.options}
    if spec.task == "vae":
        base["vae"] = (spec.vae or VaeSpec()).dump()
    if spec.data.audio is not None:
        base["data"]["audio"] = spec.data.audio.dump()
    if evaluate is not None:
        base["evaluate"] = evaluate
    return JobConfig.model_validate(settings.apply_to_job_config(base))
