"""What the gates read besides ``evidence.json``: the run's text files and the
GPU measurement. The runner (local or operator) reads the files and queries
Prometheus; the gates stay pure functions of these values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any


def join_path(run_dir: str, name: str) -> str:
    """``02_baseline`` + ``logs/metrics.json`` -> ``02_baseline/logs/metrics.json``:
    the evidence path a check records, relative to the pipeline's root."""
    if not run_dir:
        return name
    return f"{run_dir.rstrip('/')}/{name.lstrip('/')}"


@dataclass(frozen=True)
class RunFiles:
    """A phase's text artifacts, as read by the runner; None: the file is missing.

    ``run_dir`` is the phase folder relative to the pipeline's root (e.g.
    ``02_baseline``); it prefixes every evidence path a check records.
    """

    log_text: str | None = None
    metrics_json: dict[str, Any] | None = None
    report_text: str | None = None  # baseline_results.md (Phase 2)
    report_path: str = "baseline_results.md"
    run_dir: str = ""
    log_path: str = "logs/training.log"
    metrics_path: str = "logs/metrics.json"
    # Paths (relative to the phase folder) of the files the evidence lists
    # that the runner found on disk (the VAE's preview wav/png files:
    # ``files_present``); None: nobody looked, and a check that needs them fails.
    existing_files: frozenset[str] | None = None

    def at(self, name: str) -> str:
        return join_path(self.run_dir, name)


def safe_relative(path: str) -> bool:
    """A relative POSIX path that stays inside the folder it is relative to:
    not absolute, no ``..``, no backslash, not empty. A path a job wrote into
    its evidence is untrusted: only such a path is looked up or linked."""
    if not path or "\\" in path or path.startswith("/") or ":" in path.split("/")[0]:
        return False
    parts = PurePosixPath(path).parts
    return bool(parts) and ".." not in parts


def files_present(root: str | Path, names: Iterable[str]) -> frozenset[str]:
    """The runner's side of ``RunFiles.existing_files``: which of ``names``
    (relative to the phase folder ``root``) are regular files there. A name
    that is not ``safe_relative``, or that resolves outside ``root`` through a
    link, is never looked up and so never counts as present."""
    base = Path(root).resolve()
    found = set()
    for name in names:
        if not safe_relative(name):
            continue
        target = (base / name).resolve()
        if target.is_relative_to(base) and target.is_file():
            found.add(name)
    return frozenset(found)


@dataclass(frozen=True)
class GpuMeasurement:
    """Mean GPU utilization over the job, from Prometheus (or NVML).

    * ``util_mean`` set: measured, in percent (0-100).
    * ``util_mean`` None and ``reason`` set: nothing measured (no series for
      the job's GPUs, no GPU UUID recorded, no Prometheus): for a job that
      requested GPUs the check fails with that reason ("no evidence, no
      pass"); for a CPU job it is not applicable anyway.
    * ``error`` set: the source was unreachable or answered an error: the check
      fails and says so (a gate never passes on a measurement it could not make).

    ``sm_active`` is ``DCGM_FI_PROF_SM_ACTIVE`` as a fraction (0-1), None where
    the exporter does not publish it. ``gpus`` names what was measured (UUID
    and host per rank) and ``window`` over when, for the check's evidence.
    """

    util_mean: float | None = None
    sm_active: float | None = None
    source: str = "prometheus: DCGM_FI_DEV_GPU_UTIL"
    reason: str | None = None
    error: str | None = None
    gpus: tuple[str, ...] = ()
    window: str = ""

    @classmethod
    def not_applicable(cls, reason: str, source: str = "prometheus") -> GpuMeasurement:
        """Nothing measured, and why (the gate decides what that means)."""
        return cls(util_mean=None, source=source, reason=reason)

    absent = not_applicable

    @classmethod
    def unreachable(cls, error: str, source: str = "prometheus") -> GpuMeasurement:
        return cls(util_mean=None, source=source, error=error)
