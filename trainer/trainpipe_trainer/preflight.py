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


def one_batch(config: JobConfig, dataset: Any, shuffle: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
    inputs, targets = next(iter(loader))
    return inputs, targets


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
    from trainpipe_trainer.data import build_datasets
    from trainpipe_trainer.engine.environment import write_environment
    from trainpipe_trainer.job import seed_everything
    from trainpipe_trainer.models import ModelBuildRequest, build_model

    run_dir = Path(config.run_dir)
    seed_everything(config.seed, config.deterministic)
    write_environment(
        run_dir / "environment.json",
        {"python": config.seed, "numpy": config.seed, "torch": config.seed, "rank_offset": 0},
    )
    log.info("Preflight of %s: data %s, model %s", config.name, config.data.source, config.model.name)
    bundle = build_datasets(config.data, config.seed)
    bundle.report.write(run_dir / "data_report.json")
    num_classes = len(bundle.classes)
    report.num_classes = num_classes
    log.info("Data: %d classes, %s samples (train/val/test)", num_classes,
             "/".join(str(len(ds)) for ds in (bundle.train, bundle.val, bundle.test)))

    batches: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    fractions = config.data.split.model_dump()
    labels_ok = True
    for split, dataset in zip(SPLITS, (bundle.train, bundle.val, bundle.test), strict=True):
        check = SplitBatchCheck(ok=False, samples=len(dataset))
        report.splits[split] = check
        if len(dataset) == 0:
            if split != "train" and fractions[split] == 0:
                check.ok, check.skipped = True, True
                log.info("%s: empty (data.split.%s is 0), skipped", split, split)
            else:
                check.error = f"the {split} split holds no usable sample"
                log.error("%s: %s", split, check.error)
            continue
        try:
            inputs, targets = one_batch(config, dataset, shuffle=(split == "train"))
        except Exception as exc:  # noqa: BLE001 - one split's failure is that split's result
            check.error = _error(exc)
            log.error("%s: no batch: %s", split, check.error)
            continue
        check.batch_shape = list(inputs.shape)
        in_range = bool(((targets >= 0) & (targets < num_classes)).all())
        labels_ok = labels_ok and in_range
        check.ok = in_range
        if not in_range:
            check.error = (
                f"labels outside [0, {num_classes}): {sorted(set(targets.tolist()) - set(range(num_classes)))}"
            )
        batches[split] = (inputs, targets)
        log.info("%s: batch %s %s, labels %s", split, list(inputs.shape), inputs.dtype,
                 "in range" if in_range else "OUT OF RANGE")
    report.labels_in_range = labels_ok and bool(batches)

    if "train" not in batches:
        return
    inputs, targets = batches["train"]
    report.batch_shape = list(inputs.shape)
    report.batch_dtype = str(inputs.dtype).removeprefix("torch.")
    request = ModelBuildRequest(
        num_classes=num_classes, image_size=config.data.image_size, dropout=config.train.dropout
    )
    model = build_model(config.model.name, request, pretrained=config.model.pretrained)
    _forward_backward(model, inputs, targets, job_device(config), report, log)


def _forward_backward(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    report: PreflightReport,
    log: logging.Logger,
) -> None:
    model.to(device).train()
    model.zero_grad(set_to_none=True)
    logits = model(inputs.to(device))
    loss = nn.functional.cross_entropy(logits.float(), targets.to(device))
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
