"""Engine overhead against a minimal hand-written PyTorch loop, per built-in task.

Same model, same in-memory data, same batch size and optimizer; the two run
interleaved (engine, plain, engine, plain, ...) so machine noise hits both.
Step time = wall time between consecutive optimizer steps; the first steps
of each run (loader start-up) are dropped. Also reports checkpoint save time
as a fraction of epoch time, from the engine's own evidence.

- ``classification``: ResNet-18 (by default) on random 32x32 images; the
  plain loop is forward, cross-entropy, backward, AdamW step.
- ``vae``: ConvVAE (``vae-small``) on the chunks of ``builtin:tones``
  (decoded once, kept in memory, tiled to the steps the bench needs); the
  plain loop is LogMel on the batch, the VAE's forward, ``vae_loss`` with
  the annealed KL weight and free bits, backward, AdamW step. The engine
  runs ``VaeTask`` (whose step is exactly that, plus the engine's clipping,
  non-finite guard and bookkeeping).

    python bench/engine_overhead.py [--task classification|vae] [--rounds 3] [--steps 20]

Without ``--task`` both run, in one process, and bench/results/engine_overhead.json
holds a section per task. Targets: step-time ratio <= 1.03, checkpoint save
<= 5% of epoch time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.engine.loop import TrainingParts
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.job import run_job
from trainpipe_trainer.models import ModelBuildRequest, build_model
from trainpipe_trainer.tasks.classification import ClassificationTask

RESULTS = Path(__file__).parent / "results" / "engine_overhead.json"
WARMUP_STEPS = 3
STEP_RATIO_TARGET = 1.03
CHECKPOINT_TARGET = 0.05
TASKS = ("classification", "vae")


class InMemory(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        index = key[0] if isinstance(key, tuple) else key
        return self.x[index], self.y[index]


def step_times(stamps: list[float], drop: int) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][drop:]


# ------------------------------------------------------------ classification
def make_model(name: str, image_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, ModelBuildRequest(num_classes=10, image_size=image_size))


def plain_loop(model: nn.Module, data: Dataset, batch_size: int, lr: float) -> list[float]:
    """The minimal loop: what a person writes by hand."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    stamps = [time.perf_counter()]
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    return step_times(stamps, WARMUP_STEPS)


def engine_run(parts: TrainingParts, config: JobConfig) -> tuple[list[float], dict]:
    stamps: list[float] = []
    started = time.perf_counter()
    evidence = run_job(config, parts=parts, stop=StopSignal(), on_step=lambda _s: stamps.append(time.perf_counter()))
    if evidence.status != "completed":
        raise RuntimeError(f"the engine run failed: {evidence.reason}")
    stamps.insert(0, started)
    epoch = evidence.timings.epoch_seconds[0]
    saves = sum(evidence.timings.checkpoint_save_seconds)
    return step_times(stamps, WARMUP_STEPS + 1), {"epoch_seconds": epoch, "checkpoint_seconds": saves}


def classification_rounds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    batch_size = args.batch_size or 64
    gen = torch.Generator().manual_seed(0)
    n = batch_size * (args.steps + WARMUP_STEPS + 1)
    x = torch.randn(n, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    data, val = InMemory(x, y), InMemory(x[:batch_size], y[:batch_size])

    def config(run_dir: Path) -> JobConfig:
        return JobConfig.model_validate({
            "name": "bench", "runDir": str(run_dir), "fresh": True,
            "data": {"batchSize": batch_size, "imageSize": args.image_size},
            "train": {"epochs": 1, "lr": 1e-3, "logEverySteps": 1000, "scheduler": "none"},
            "ray": {"enabled": False},
        })

    engine_steps: list[list[float]] = []
    plain_steps: list[list[float]] = []
    saves: list[dict] = []
    for round_ in range(args.rounds):
        parts = TrainingParts(model=make_model(args.model, args.image_size, round_), train_set=data, val_set=val,
                              task=ClassificationTask.with_classes([str(i) for i in range(10)]))
        steps, save = engine_run(parts, config(tmp / f"classification-{round_}"))
        engine_steps.append(steps)
        saves.append(save)
        plain_steps.append(plain_loop(make_model(args.model, args.image_size, round_), data, batch_size, 1e-3))
    return summarize(
        {"model": args.model, "image_size": args.image_size, "batch_size": batch_size,
         "data": f"{n} random {args.image_size}x{args.image_size} images, 10 classes"},
        engine_steps, plain_steps, saves,
    )


# --------------------------------------------------------------------- vae
def vae_config(run_dir: Path, batch_size: int, cache_dir: str | None) -> JobConfig:
    return JobConfig.model_validate({
        "name": "bench-vae", "runDir": str(run_dir), "fresh": True, "task": "vae",
        "data": {"source": "builtin:tones", "batchSize": batch_size, "cacheDir": cache_dir},
        "model": {"name": "vae-small"},
        "vae": {"previewEvery": 1000, "priorSamples": 0},
        "train": {"epochs": 1, "lr": 1e-3, "logEverySteps": 1000, "scheduler": "none"},
        "ray": {"enabled": False},
    })


def tones_chunks(config: JobConfig, n: int) -> tuple[Dataset, Dataset, int]:
    """Every chunk of builtin:tones (train, val and test splits), decoded
    once and tiled to ``n``: the in-memory data both loops train on."""
    from trainpipe_trainer.tasks.vae.audio_data import build_audio_data
    from trainpipe_trainer.tasks.vae.chunk_dataset import AudioChunkDataset

    data = build_audio_data(config.data, config.seed)
    waves = torch.cat([data.train.waves, data.val.waves, data.test.waves])
    distinct = len(waves)
    tiled = waves.repeat(-(-n // distinct), 1, 1)[:n]
    chunks = [w.numpy() for w in tiled]
    train = AudioChunkDataset(chunks, ["tones"] * n, data.chunk_samples)
    val = AudioChunkDataset(chunks[: config.data.batch_size], ["tones"] * config.data.batch_size, data.chunk_samples)
    return train, val, distinct


def make_vae(config: JobConfig, seed: int) -> nn.Module:
    from trainpipe_trainer.tasks.vae.mel import frames_for
    from trainpipe_trainer.tasks.vae.model import build_vae

    torch.manual_seed(seed)
    audio = config.data.audio
    return build_vae(config.model.name, audio.n_mels, frames_for(audio), config.vae.latent_dim)


def plain_vae_loop(model: nn.Module, data: Dataset, config: JobConfig, lr: float) -> list[float]:
    """The hand-written VAE loop: log-mel, forward, ELBO with the annealed KL
    weight and free bits, backward, AdamW step."""
    from trainpipe_trainer.tasks.vae.loss import kl_weight, vae_loss
    from trainpipe_trainer.tasks.vae.mel import LogMel

    loader = DataLoader(data, batch_size=config.data.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    mel = LogMel(config.data.audio)
    batches = len(loader)
    model.train()
    stamps = [time.perf_counter()]
    for step, (wave, _index) in enumerate(loader):
        optimizer.zero_grad(set_to_none=True)
        x = mel(wave)
        x_hat, mu, logvar = model(x)
        weight = kl_weight((step + 1) / batches, config.vae, config.train.epochs)
        loss = vae_loss(x_hat, x, mu, logvar, weight, config.vae.free_bits).total
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    return step_times(stamps, WARMUP_STEPS)


def vae_rounds(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from trainpipe_trainer.tasks.vae.task import VaeTask

    batch_size = args.vae_batch_size
    n = batch_size * (args.steps + WARMUP_STEPS + 1)
    base = vae_config(tmp / "vae", batch_size, str(tmp / "cache"))
    train, val, distinct = tones_chunks(base, n)

    engine_steps: list[list[float]] = []
    plain_steps: list[list[float]] = []
    saves: list[dict] = []
    for round_ in range(args.rounds):
        config = vae_config(tmp / f"vae-{round_}", batch_size, str(tmp / "cache"))
        parts = TrainingParts(model=make_vae(config, round_), train_set=train, val_set=val, task=VaeTask(config))
        steps, save = engine_run(parts, config)
        engine_steps.append(steps)
        saves.append(save)
        plain_steps.append(plain_vae_loop(make_vae(config, round_), train, config, 1e-3))
    audio = base.data.audio
    return summarize(
        {"model": base.model.name, "batch_size": batch_size,
         "data": (f"builtin:tones: {distinct} distinct {audio.chunk_seconds} s chunks at {audio.sample_rate} Hz, "
                  f"tiled to {n}; log-mel {audio.n_mels} bands on the batch"),
         "kl": {"beta": base.vae.beta, "free_bits": base.vae.free_bits, "schedule": base.vae.kl_anneal.schedule}},
        engine_steps, plain_steps, saves,
    )


# ------------------------------------------------------------------ report
def summarize(setup: dict[str, Any], engine: list[list[float]], plain: list[list[float]],
              saves: list[dict]) -> dict[str, Any]:
    engine_all = [s for run in engine for s in run]
    plain_all = [s for run in plain for s in run]
    ratio = statistics.median(engine_all) / statistics.median(plain_all)
    save_fraction = statistics.median(s["checkpoint_seconds"] / s["epoch_seconds"] for s in saves)
    return {
        **setup,
        "rounds": len(engine), "steps_per_round": len(engine_all) // len(engine),
        "engine_median_step_s": statistics.median(engine_all),
        "plain_median_step_s": statistics.median(plain_all),
        "engine_round_medians_s": [statistics.median(r) for r in engine],
        "plain_round_medians_s": [statistics.median(r) for r in plain],
        # Each round's engine and plain runs ran back to back: their ratio is
        # the least exposed to load that changes between rounds.
        "per_round_ratios": [statistics.median(e) / statistics.median(p) for e, p in zip(engine, plain, strict=True)],
        "step_time_ratio": ratio, "step_time_ratio_target": STEP_RATIO_TARGET,
        "step_time_ratio_met": ratio <= STEP_RATIO_TARGET,
        "checkpoint_save_fraction_of_epoch": save_fraction, "checkpoint_save_target": CHECKPOINT_TARGET,
        "checkpoint_save_met": save_fraction <= CHECKPOINT_TARGET,
        "checkpoint_runs": saves,
        "raw_step_seconds": {"engine": engine, "plain": plain},
    }


def machine() -> dict[str, Any]:
    return {
        "machine": platform.machine(), "processor": platform.processor() or None, "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": "cpu", "load_average_at_start": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, action="append",
                        help="the task(s) to measure (repeatable; default: both)")
    parser.add_argument("--model", default="resnet18", help="classification model")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="classification batch size (default 64)")
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    tasks = args.task or list(TASKS)

    result: dict[str, Any] = {
        "bench": "engine_overhead", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **machine(), "warmup_steps_dropped": WARMUP_STEPS,
        "method": ("per task and round: one engine epoch then the plain loop on the same data, model init "
                   "and batch size; step time = wall time between optimizer steps; medians over every step "
                   "of every round"),
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            run = classification_rounds if task == "classification" else vae_rounds
            result["tasks"][task] = run(args, Path(tmp))
            print(f"{task}: step ratio {result['tasks'][task]['step_time_ratio']:.4f}", flush=True)
    result["all_targets_met"] = all(
        t["step_time_ratio_met"] and t["checkpoint_save_met"] for t in result["tasks"].values())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "tasks"}, indent=2))
    for task, section in result["tasks"].items():
        print(task, json.dumps({k: v for k, v in section.items() if k != "raw_step_seconds"}, indent=2))


if __name__ == "__main__":
    main()
