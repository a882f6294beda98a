"""Samples one GPU's utilization and memory through NVML, in a background thread.

Why: the Baseline gate asks whether the GPU was kept busy (a data-loader-bound
job shows 20-40 % utilization), and the operator reads the same numbers from
Prometheus. NVML is what nvidia-smi and DCGM read; it costs microseconds per
call, so sampling once a second does not disturb training.

Where there is no NVML library or no GPU (CPU machines, CI), ``available`` is
False, ``start()`` does nothing and ``summary()`` returns None values with the
``reason``, so callers and reports need no special case.

The device index is the CUDA index the process sees (``cuda:N``). NVML numbers
GPUs physically, ignoring ``CUDA_VISIBLE_DEVICES`` (which Ray sets per worker),
so the index is translated through that variable first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclass(frozen=True)
class GpuSample:
    """One NVML reading."""

    time: float  # time.time() of the reading
    device: str  # "cuda:N" as this process numbers it
    name: str  # GPU model, e.g. "NVIDIA H100 80GB HBM3"
    util_percent: float  # percent of the last sample period a kernel was running
    memory_used_bytes: int
    memory_total_bytes: int


def format_sample(sample: GpuSample) -> str:
    """The engine's log line for one sample: ``GPU Util: 87% | Mem: 12.3/80.0 GB`` (GB = 2**30 bytes)."""
    used = sample.memory_used_bytes / GIB
    total = sample.memory_total_bytes / GIB
    return f"GPU Util: {sample.util_percent:.0f}% | Mem: {used:.1f}/{total:.1f} GB"


def _nvml_target(device_index: int) -> tuple[str, str]:
    """("index", "N") or ("uuid", "GPU-...") naming, for NVML, the process's CUDA device N."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return "index", str(device_index)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if device_index >= len(entries):
        raise IndexError(f"cuda:{device_index} is not visible (CUDA_VISIBLE_DEVICES={visible!r})")
    entry = entries[device_index]
    return ("index", entry) if entry.isdigit() else ("uuid", entry)


class GpuMonitor:
    """Background NVML sampler for one GPU: ``start()``, ``stop()``, ``summary()``, ``latest()``."""

    def __init__(
        self,
        interval_s: float = 1.0,
        device_index: int = 0,
        on_sample: Callable[[GpuSample], None] | None = None,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s
        self.device_index = device_index
        self.device = f"cuda:{device_index}"
        self.on_sample = on_sample
        self.name: str | None = None
        self.memory_total_bytes: int | None = None
        self.reason: str | None = None
        self._available = False
        self._nvml: Any = None
        self._handle: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: GpuSample | None = None
        self._count = 0
        self._util_sum = 0.0
        self._util_max: float | None = None
        self._mem_max: int | None = None
        # The current window (an epoch's samples): take_window() reads and restarts it.
        self._window_count = 0
        self._window_sum = 0.0
        self._window_mem: int | None = None
        self._errors = 0
        self._probe()

    @property
    def available(self) -> bool:
        """True when NVML answered for this device when the monitor was made."""
        return self._available

    def _probe(self) -> None:
        """Open NVML and this device's handle; on failure set ``reason`` instead."""
        try:
            import pynvml
        except ImportError as exc:  # nvidia-ml-py is a dependency, but be explicit
            self.reason = f"pynvml (nvidia-ml-py) is not installed: {exc}"
            return
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"NVML unavailable (no NVIDIA driver or GPU): {exc}"
            return
        try:
            kind, ref = _nvml_target(self.device_index)
            if kind == "uuid":
                handle = pynvml.nvmlDeviceGetHandleByUUID(ref)
            else:
                count = pynvml.nvmlDeviceGetCount()
                if int(ref) >= count:
                    raise IndexError(f"NVML sees {count} GPU(s); no index {ref}")
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(ref))
            name = pynvml.nvmlDeviceGetName(handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
            self.memory_total_bytes = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            pynvml.nvmlDeviceGetUtilizationRates(handle)  # MIG slices raise here
        except Exception as exc:
            self.reason = f"NVML cannot read {self.device}: {exc}"
            pynvml.nvmlShutdown()
            return
        self._nvml, self._handle = pynvml, handle
        self._available, self.reason = True, None

    def sample(self) -> GpuSample | None:
        """Take one reading now, record it and call ``on_sample``; None when unavailable."""
        nvml = self._nvml
        if nvml is None:
            return None
        util = nvml.nvmlDeviceGetUtilizationRates(self._handle)
        mem = nvml.nvmlDeviceGetMemoryInfo(self._handle)
        s = GpuSample(
            time=time.time(),
            device=self.device,
            name=self.name or "",
            util_percent=float(util.gpu),
            memory_used_bytes=int(mem.used),
            memory_total_bytes=int(mem.total),
        )
        with self._lock:
            self._latest = s
            self._count += 1
            self._util_sum += s.util_percent
            self._util_max = max(self._util_max or 0.0, s.util_percent)
            self._mem_max = max(self._mem_max or 0, s.memory_used_bytes)
            self._window_count += 1
            self._window_sum += s.util_percent
            self._window_mem = max(self._window_mem or 0, s.memory_used_bytes)
        if self.on_sample is not None:
            try:
                self.on_sample(s)
            except Exception:  # a broken callback must not stop the sampling
                log.exception("GPU monitor callback failed")
        return s

    def _run(self) -> None:
        # Wait one interval first: a reading taken before training starts is idle time.
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:
                self._errors += 1
                if self._errors == 1:
                    log.warning("GPU monitor: NVML read failed (%s); continuing", exc)

    def start(self) -> GpuMonitor:
        """Start sampling every ``interval_s`` in a daemon thread (no-op when unavailable)."""
        if not self.available or self._thread is not None:
            return self
        if self._nvml is None:  # started again after stop()
            self._probe()
            if self._nvml is None:
                return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and release NVML; the statistics stay readable. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=self.interval_s + 5)
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            finally:
                self._nvml = self._handle = None

    def latest(self) -> GpuSample | None:
        """The most recent reading, or None."""
        with self._lock:
            return self._latest

    def take_window(self) -> tuple[float | None, int | None]:
        """Mean utilization (percent) and peak memory (bytes) of the samples
        taken since the last call, and a new window started: called at the
        end of each epoch, it gives that epoch's GPU utilization. (None,
        None) when no sample fell in the window (no GPU, or an epoch shorter
        than one interval)."""
        with self._lock:
            n, total, memory = self._window_count, self._window_sum, self._window_mem
            self._window_count, self._window_sum, self._window_mem = 0, 0.0, None
        return (total / n if n else None), (memory if n else None)

    def summary(self) -> dict[str, Any]:
        """Mean and max utilization, peak memory and sample count (None values when no samples)."""
        with self._lock:
            n = self._count
            if not self.available:
                reason = self.reason
            elif not n:
                reason = "no samples: the monitor ran for less than one interval"
            else:
                reason = None
            return {
                "device": self.device,
                "name": self.name,
                "util_mean": self._util_sum / n if n else None,
                "util_max": self._util_max,
                "memory_max_bytes": self._mem_max,
                "memory_total_bytes": self.memory_total_bytes,
                "samples": n,
                "reason": reason,
            }

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
