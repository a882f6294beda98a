"""GPU utilization per epoch (issue 13): rank 0's GPU monitor gives each
epoch's mean utilization and peak memory (``GpuMonitor.take_window``); the
engine puts them in the epoch's record (``metrics.json``), and the job's
tracker logs ``gpu_utilization`` at that epoch. On CPU there is no monitor:
the record has neither and no ``gpu_utilization`` is logged. NVML is
replaced by a stand-in here (no GPU on these machines); the engine, the
tracker and the sink interface are the real ones."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.unit.test_engine import linear_parts
from trainpipe_trainer.engine.distributed import DistContext
from trainpipe_trainer.engine.gpu_monitor import GpuMonitor
from trainpipe_trainer.engine.loop import Engine
from trainpipe_trainer.tracking.job_tracker import JobTracker
from trainpipe_trainer.tracking.sink import MediaFile, Sink


class _Nvml:
    """NVML's three calls the monitor makes, replaying utilization readings."""

    def __init__(self, utils: list[float], used: list[int]) -> None:
        self.utils, self.used = list(utils), list(used)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> Any:  # noqa: N802 - NVML's name
        return SimpleNamespace(gpu=self.utils.pop(0))

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> Any:  # noqa: N802 - NVML's name
        return SimpleNamespace(used=self.used.pop(0), total=80 * 2**30)

    def nvmlShutdown(self) -> None:  # noqa: N802 - NVML's name
        return None


def _monitor(utils: list[float], used: list[int]) -> GpuMonitor:
    monitor = GpuMonitor(interval_s=1.0)
    monitor._nvml, monitor._handle, monitor._available = _Nvml(utils, used), object(), True
    return monitor


def test_each_window_is_the_mean_and_peak_of_its_own_samples() -> None:
    monitor = _monitor([20.0, 40.0, 90.0, 100.0, 80.0], [1, 5, 3, 2, 9])
    assert monitor.take_window() == (None, None)  # nothing sampled yet
    monitor.sample()
    monitor.sample()
    assert monitor.take_window() == (30.0, 5)
    for _ in range(3):
        monitor.sample()
    assert monitor.take_window() == (90.0, 9)
    assert monitor.take_window() == (None, None)  # a window without samples says so
    assert monitor.summary()["util_mean"] == 66.0  # the job's mean is unchanged


class _Recording(Sink):
    name = "recording"

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def start(self, params: Mapping[str, str]) -> None:
        return None

    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        self.epochs[epoch] = dict(metrics)

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        return None

    def artifact(self, path: Path, artifact_path: str = "") -> None:
        return None

    def finish(self, status: Any) -> None:
        return None


def _fit(make_job: Any, name: str, gpu_window: Any) -> tuple[_Recording, list[dict[str, Any]]]:
    config = make_job(name, data={"batchSize": 8}, train={"epochs": 3})
    sink = _Recording()
    tracker = JobTracker(config, [sink])
    engine = Engine(config, linear_parts(n=16), DistContext(), tracker=tracker, gpu_window=gpu_window)
    engine.fit()
    # The records as metrics.json holds them (run_job writes the engine's history).
    return sink, [json.loads(r.model_dump_json()) for r in engine.progress.history]


def test_each_epoch_logs_the_monitors_utilization_for_that_epoch(make_job: Any) -> None:
    monitor = _monitor([10.0, 30.0, 55.0, 60.0, 70.0, 95.0], [100, 300, 200, 400, 400, 500])
    sampled = iter([2, 1, 3])  # the samples that fall in each epoch

    def window() -> tuple[float | None, int | None]:
        for _ in range(next(sampled)):
            monitor.sample()
        return monitor.take_window()

    sink, records = _fit(make_job, "gpu", window)
    assert {n: m["gpu_utilization"] for n, m in sink.epochs.items()} == {1: 20.0, 2: 55.0, 3: 75.0}
    assert [(r["gpu_util_mean"], r["gpu_memory_max_bytes"]) for r in records] == [
        (20.0, 300), (55.0, 200), (75.0, 500)]


def test_on_cpu_no_gpu_utilization_is_logged(make_job: Any) -> None:
    sink, records = _fit(make_job, "cpu", None)
    assert sink.epochs and all("gpu_utilization" not in m for m in sink.epochs.values())
    assert all(r.get("gpu_util_mean") is None for r in records)
