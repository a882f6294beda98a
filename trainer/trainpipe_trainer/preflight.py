"""``action: preflight``: the Planning gate's ``preflight`` evidence.

Before any training is paid for: open the data as the train job would
(``data_report.json``, ``environment.json``), take one real batch from a real
DataLoader of each split (the test batch is only decoded, never scored),
check the labels are in range, and run one forward and backward pass of the
configured model on the train batch, checking that the loss and every
gradient are finite. The outcome is ``preflight.json`` and
``logs/preflight.log``; every failure, including an exception, becomes
``ok: false`` with the reason, never a crash without a report.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from trainpipe_trainer.contract.data_report import SPLITS
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import PREFLIGHT_FILE, PreflightReport, SplitBatchCheck

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@contextlib.contextmanager
def job_log(path: Path, name: str) -> Iterator[logging.Logger]:
    """A logger writing to ``path`` and the console for the duration of a
    one-process job; its handlers are closed on exit."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(path, encoding="utf-8"),
    ]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def job_device(config: JobConfig) -> torch.device:
    """CUDA when the job asks for a GPU and one is visible, else the CPU."""
    if config.resources.gpus_per_worker > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def gpu_problem(config: JobConfig, cuda_available: bool) -> str | None:
    """Why a job that asked for GPUs would train on the CPU; None when it
    would not. A GPU job on the CPU is a failure, not a warning: it would
    spend the budget at a fraction of the speed, and no GPU measurement
    could ever pass its gate."""
    wanted = config.resources.gpus_per_worker
    if wanted <= 0 or cuda_available:
        return None
    import socket

    build = torch.version.cuda or "none (a CPU-only build of torch)"
    return (
        f"resources.gpusPerWorker is {wanted:g} but CUDA is not available on {socket.gethostname()} "
        f"(torch {torch.__version__}, CUDA build {build}): the job would train on the CPU. "
        "Run it where a GPU is visible, or set spec.resources.gpusPerWorker to 0"
    )


def one_batch(config: JobConfig, dataset: Any, shuffle: bool) -> Any:
    """The first batch of a DataLoader built with the job's loader settings."""
    from trainpipe_trainer.data import EpochSampler

    generator = torch.Generator().manual_seed(config.seed)
    inner = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    workers = config.data.num_workers
    loader = DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=EpochSampler(inner),
        num_workers=workers,
        generator=generator,
    )
    return next(iter(loader))


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_preflight(config: JobConfig) -> PreflightReport:
    """Run the preflight and write ``<runDir>/preflight.json``. Never raises
    for a failure of the data, the model or the pass: it is in the report."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PREFLIGHT_FILE).unlink(missing_ok=True)
    with job_log(run_dir / "logs" / "preflight.log", "trainpipe.preflight") as log:
        started = time.perf_counter()
        report = PreflightReport(ok=False, model=config.model.name, device=str(job_device(config)))
        try:
            _preflight(config, report, log)
        except Exception as exc:  # noqa: BLE001 - every failure must become the report
            report.error = _error(exc)
            log.error("Preflight failed: %s\n%s", report.error, "".join(traceback.format_exception(exc)))
        problem = gpu_problem(config, torch.cuda.is_available())
        if problem:
            log.error("Preflight failed: %s", problem)
            report.error = f"{report.error}; {problem}" if report.error else problem
        report.ok = report.error is None and _passed(report)
        report.seconds = time.perf_counter() - started
        report.write(run_dir / PREFLIGHT_FILE)
        log.info("Preflight %s (%.1fs): %s", "passed" if report.ok else "FAILED", report.seconds, _summary(report))
    return report


def _passed(report: PreflightReport) -> bool:
    return (
        bool(report.splits)
        and all(check.ok for check in report.splits.values())
        and report.labels_in_range
        and report.loss_finite
        and report.grads_finite
    )


def _summary(report: PreflightReport) -> str:
    if report.error:
        return report.error
    failed = [f"{split}: {check.error}" for split, check in report.splits.items() if not check.ok]
    parts = failed + [
        f"batch {report.batch_shape} {report.batch_dtype}",
        f"labels in range: {report.labels_in_range}",
        f"loss {report.loss} (finite: {report.loss_finite})",
        f"gradients finite: {report.grads_finite}",
    ]
    if report.params_with_nonfinite_grad:
        parts.append(f"non-finite gradients in {', '.join(report.params_with_nonfinite_grad[:10])}")
    return "; ".join(parts)


def _preflight(config: JobConfig, report: PreflightReport, log: logging.Logger) -> None:
    from trainpipe_trainer.engine.environment import write_environment
    from trainpipe_trainer.job import seed_everything
    from trainpipe_trainer.tasks import resolve_task

    run_dir = Path(config.run_dir)
    seed_everything(config.seed, config.deterministic)
    write_environment(
        run_dir / "environment.json",
        {"python": config.seed, "numpy": config.seed, "torch": config.seed, "rank_offset": 0},
    )
    log.info("Preflight of %s: task %s, data %s, model %s", config.name, config.task, config.data.source,
             config.model.name)
    task = resolve_task(config)
    data = task.build_data()
    if data.report is not None:
        data.report.write(run_dir / "data_report.json")
    classes = data.info.get("classes")
    report.num_classes = len(classes) if classes is not None else None
    log.info("Data: %s%s samples (train/val/test)",
             f"{len(classes)} classes, " if classes is not None else "",
             "/".join(str(len(ds)) for ds in (data.train, data.val, data.test)))  # type: ignore[arg-type]

    batches: dict[str, Any] = {}
    fractions = config.data.split.model_dump()
    batches_ok = True
    for split, dataset in zip(SPLITS, (data.train, data.val, data.test), strict=True):
        check = SplitBatchCheck(ok=False, samples=len(dataset))  # type: ignore[arg-type]
        report.splits[split] = check
        if len(dataset) == 0:  # type: ignore[arg-type]
            if split != "train" and fractions[split] == 0:
                check.ok, check.skipped = True, True
                log.info("%s: empty (data.split.%s is 0), skipped", split, split)
            else:
                check.error = f"the {split} split holds no usable sample"
                log.error("%s: %s", split, check.error)
            continue
        try:
            batch = one_batch(config, dataset, shuffle=(split == "train"))
        except Exception as exc:  # noqa: BLE001 - one split's failure is that split's result
            check.error = _error(exc)
            log.error("%s: no batch: %s", split, check.error)
            continue
        inputs = _first_tensor(batch)
        check.batch_shape = list(inputs.shape)
        problem = task.check_batch(batch)
        batches_ok = batches_ok and problem is None
        check.ok = problem is None
        check.error = problem
        batches[split] = batch
        log.info("%s: batch %s %s, %s", split, list(inputs.shape), inputs.dtype,
                 "labels in range" if problem is None else f"BAD BATCH: {problem}")
    report.labels_in_range = batches_ok and bool(batches)

    if "train" not in batches:
        return
    batch = batches["train"]
    inputs = _first_tensor(batch)
    report.batch_shape = list(inputs.shape)
    report.batch_dtype = str(inputs.dtype).removeprefix("torch.")
    model = task.build_model(data)
    _forward_backward(task, model, batch, job_device(config), report, log)


def _first_tensor(batch: Any) -> torch.Tensor:
    """A batch's inputs: the tensor itself, or the first element of a tuple/list."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        return next(v for v in batch.values() if isinstance(v, torch.Tensor))
    raise TypeError(f"a batch of {type(batch).__name__}: expected a tensor, or a tuple/list/dict of tensors")


def _forward_backward(
    task: Any,
    model: nn.Module,
    batch: Any,
    device: torch.device,
    report: PreflightReport,
    log: logging.Logger,
) -> None:
    from trainpipe_trainer.tasks.base import batch_to

    model.to(device).train()
    task.setup(device)
    model.zero_grad(set_to_none=True)
    loss = task.training_step(model, batch_to(batch, device), 0.0).loss
    value = float(loss.detach())
    report.loss_finite = math.isfinite(value)
    report.loss = value if report.loss_finite else None
    loss.backward()
    bad: list[str] = []
    missing: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        grad: Any = param.grad
        if grad is None:
            missing.append(name)
        elif not bool(torch.isfinite(grad).all()):
            bad.append(name)
    report.params_with_nonfinite_grad = bad
    report.params_without_grad = missing
    report.grads_finite = not bad
    log.info("Forward/backward: loss %s, %d parameters with non-finite gradients",
             f"{value:.4f}" if report.loss_finite else value, len(bad))
