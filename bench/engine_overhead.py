"""Engine overhead against a minimal hand-written PyTorch loop.

Same model, same in-memory data, same batch size and optimizer; the two run
interleaved (engine, plain, engine, plain, ...) so machine noise hits both.
Step time = wall time between consecutive optimizer steps; the first steps
of each run (loader start-up) are dropped. Also reports checkpoint save time
as a fraction of epoch time, from the engine's own evidence.

    python bench/engine_overhead.py [--model resnet18] [--rounds 3] [--steps 20]

Writes bench/results/engine_overhead.json. Targets: step-time ratio <= 1.03,
checkpoint save <= 5% of epoch time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

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


class InMemory(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        index = key[0] if isinstance(key, tuple) else key
        return self.x[index], self.y[index]


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
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP_STEPS:]


def engine_run(model: nn.Module, data: Dataset, val: Dataset, args: argparse.Namespace, run_dir: Path) -> tuple[list[float], dict]:
    config = JobConfig.model_validate({
        "name": "bench", "runDir": str(run_dir), "fresh": True,
        "data": {"batchSize": args.batch_size, "imageSize": args.image_size},
        "train": {"epochs": 1, "lr": 1e-3, "logEverySteps": 1000, "scheduler": "none"},
        "ray": {"enabled": False},
    })
    stamps: list[float] = []
    parts = TrainingParts(model=model, train_set=data, val_set=val,
                          task=ClassificationTask.with_classes([str(i) for i in range(10)]))
    started = time.perf_counter()
    evidence = run_job(config, parts=parts, stop=StopSignal(), on_step=lambda _s: stamps.append(time.perf_counter()))
    stamps.insert(0, started)
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP_STEPS + 1:]
    epoch = evidence.timings.epoch_seconds[0]
    saves = sum(evidence.timings.checkpoint_save_seconds)
    return steps, {"epoch_seconds": epoch, "checkpoint_seconds": saves}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    n = args.batch_size * (args.steps + WARMUP_STEPS + 1)
    x = torch.randn(n, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    data, val = InMemory(x, y), InMemory(x[: args.batch_size], y[: args.batch_size])

    engine_steps: list[float] = []
    plain_steps: list[float] = []
    saves: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            run_dir = Path(tmp) / f"round-{round_}"
            steps, save = engine_run(make_model(args.model, args.image_size, round_), data, val, args, run_dir)
            engine_steps += steps
            saves.append(save)
            plain_steps += plain_loop(make_model(args.model, args.image_size, round_), data, args.batch_size, 1e-3)

    ratio = statistics.median(engine_steps) / statistics.median(plain_steps)
    save_fraction = statistics.median(s["checkpoint_seconds"] / s["epoch_seconds"] for s in saves)
    result = {
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
        "rounds": args.rounds, "steps_per_round": len(engine_steps) // args.rounds,
        "engine_median_step_s": statistics.median(engine_steps),
        "plain_median_step_s": statistics.median(plain_steps),
        "step_time_ratio": ratio, "step_time_ratio_target": 1.03,
        "checkpoint_save_fraction_of_epoch": save_fraction, "checkpoint_save_target": 0.05,
        "checkpoint_runs": saves,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "device": "cpu",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
