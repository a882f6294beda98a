"""TrainingTelemetry (Prometheus metrics) and GpuMonitor (NVML sampling)."""

from __future__ import annotations

import sys
import threading
import time
import types
import urllib.request
from types import SimpleNamespace

import pytest
import torch
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from trainpipe_trainer.engine import gpu_monitor as gm
from trainpipe_trainer.engine.telemetry import (
    LABEL_NAMES,
    METRICS,
    TrainingTelemetry,
    markdown_table,
)

LABELS = {"pipeline": "digits", "phase": "baseline", "job": "raysubmit_1"}


def exercise(t: TrainingTelemetry) -> None:
    """One call of every recording method."""
    t.on_step(loss=0.7, lr=1e-3, grad_norm=1.5, samples_per_second=512.0, samples=64)
    t.on_skip()
    t.on_epoch(1, 0.6, 0.65, 0.8, 0.78, epoch_seconds=12.0, eta_seconds=240.0, val_top5=0.97,
               metrics={"val_acc": 0.78, "val_recon": 12.5})
    t.on_checkpoint(0.4)
    t.on_resume(3)
    t.on_gpu(util_percent=87.0, memory_bytes=12_000_000_000, device="cuda:0")


def exported(registry: CollectorRegistry) -> dict[str, tuple[str, str, set[str]]]:
    """{PromQL name: (type, help, label names)} of what the registry exports."""
    out = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[name] = (family.type, family.documentation, labels)
    return out


# ---------------------------------------------------------------- the METRICS table


def test_metrics_table_matches_what_is_exported():
    t = TrainingTelemetry(LABELS)
    exercise(t)
    got = exported(t.registry)
    assert set(got) == {m.name for m in METRICS}, "METRICS and the exported metrics differ"
    for m in METRICS:
        mtype, mhelp, labels = got[m.name]
        assert mtype == m.type, m.name
        assert mhelp == m.help and m.help, m.name
        assert labels == set(m.labels), m.name
        assert m.name.startswith("trainpipe_")


def test_markdown_table_lists_every_metric():
    table = markdown_table()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Metric | Type |")
    assert len(lines) == 2 + len(METRICS)
    for m in METRICS:
        assert f"| `{m.name}` | {m.type} |" in table
        assert m.help in table


# ---------------------------------------------------------------- values


def value(t: TrainingTelemetry, name: str, **extra: str) -> float | None:
    return t.registry.get_sample_value(name, {**t.labels, **extra})


def test_on_step_sets_gauges_and_counts_steps_and_samples():
    t = TrainingTelemetry(LABELS)
    t.on_step(loss=0.9, lr=0.1, grad_norm=3.0, samples_per_second=100.0, samples=32)
    t.on_step(loss=0.5, lr=0.05, grad_norm=None, samples_per_second=200.0, samples=16)
    assert value(t, "trainpipe_train_step_loss") == 0.5
    assert value(t, "trainpipe_learning_rate") == 0.05
    assert value(t, "trainpipe_grad_norm") == 3.0  # None leaves the last value
    assert value(t, "trainpipe_samples_per_second") == 200.0
    assert value(t, "trainpipe_train_steps_total") == 2
    assert value(t, "trainpipe_train_samples_total") == 48


def test_counters_and_histograms_start_at_zero_gauges_start_absent():
    t = TrainingTelemetry(LABELS)
    assert value(t, "trainpipe_skipped_steps_total") == 0
    assert value(t, "trainpipe_resumes_total") == 0
    assert value(t, "trainpipe_checkpoint_save_seconds_count") == 0
    assert value(t, "trainpipe_val_accuracy") is None
    t.on_skip()
    t.on_skip()
    assert value(t, "trainpipe_skipped_steps_total") == 2


def test_on_epoch_sets_summary_and_observes_duration():
    t = TrainingTelemetry(LABELS)
    t.on_epoch(7, 0.3, 0.4, 0.9, 0.85, epoch_seconds=42.0, eta_seconds=120.0)
    assert value(t, "trainpipe_epoch") == 7
    assert value(t, "trainpipe_train_loss") == 0.3
    assert value(t, "trainpipe_val_loss") == 0.4
    assert value(t, "trainpipe_train_accuracy") == 0.9
    assert value(t, "trainpipe_val_accuracy") == 0.85
    assert value(t, "trainpipe_eta_seconds") == 120.0
    assert value(t, "trainpipe_val_top5_accuracy") is None  # not given: absent, not 0
    assert value(t, "trainpipe_epoch_duration_seconds_count") == 1
    assert value(t, "trainpipe_epoch_duration_seconds_sum") == 42.0
    assert value(t, "trainpipe_epoch_duration_seconds_bucket", le="60.0") == 1
    assert value(t, "trainpipe_epoch_duration_seconds_bucket", le="30.0") == 0
    t.on_epoch(8, 0.3, 0.4, 0.9, 0.85, epoch_seconds=40.0, eta_seconds=80.0, val_top5=0.99)
    assert value(t, "trainpipe_val_top5_accuracy") == 0.99


def test_checkpoint_resume_and_gpu():
    t = TrainingTelemetry(LABELS)
    t.on_checkpoint(0.2)
    t.on_checkpoint(3.0)
    assert value(t, "trainpipe_checkpoint_save_seconds_count") == 2
    assert value(t, "trainpipe_checkpoint_save_seconds_bucket", le="0.25") == 1
    t.on_resume(12)
    assert value(t, "trainpipe_resumed_from_epoch") == 12
    assert value(t, "trainpipe_resumes_total") == 1
    t.on_gpu(55.0, 1_000, device="cuda:0")
    t.on_gpu(95.0, 2_000, device="cuda:1")
    assert value(t, "trainpipe_gpu_utilization_percent", device="cuda:0") == 55.0
    assert value(t, "trainpipe_gpu_utilization_percent", device="cuda:1") == 95.0
    assert value(t, "trainpipe_gpu_memory_used_bytes", device="cuda:1") == 2_000


def test_labels_default_to_empty_extra_labels_are_added_bad_names_refused():
    t = TrainingTelemetry({"pipeline": "p"})
    assert t.labels == {"pipeline": "p", "phase": "", "job": ""}
    assert tuple(t.labels) == LABEL_NAMES
    t.on_resume(1)
    want = {"pipeline": "p", "phase": "", "job": ""}
    assert t.registry.get_sample_value("trainpipe_resumed_from_epoch", want) == 1

    t = TrainingTelemetry({"pipeline": "p", "iteration": "2"})
    t.on_gpu(50.0, 10, device="cuda:0")
    got = {**want, "iteration": "2", "device": "cuda:0"}
    assert t.registry.get_sample_value("trainpipe_gpu_utilization_percent", got) == 50.0

    for bad in ("le", "device", "__name__", "has-dash", "1st"):
        with pytest.raises(ValueError, match="invalid telemetry label"):
            TrainingTelemetry({bad: "x"})


def test_instances_have_separate_registries():
    a, b = TrainingTelemetry({"pipeline": "a"}), TrainingTelemetry({"pipeline": "b"})
    a.on_skip()
    assert a.registry is not b.registry
    assert value(b, "trainpipe_skipped_steps_total") == 0
    own = CollectorRegistry()
    c = TrainingTelemetry({"pipeline": "c"}, registry=own)
    assert c.registry is own


def test_serve_exports_over_http_and_close_stops_it():
    t = TrainingTelemetry(LABELS)
    exercise(t)
    threads_before = set(threading.enumerate())
    port = t.serve(0, addr="127.0.0.1")
    try:
        assert port > 0
        with pytest.raises(RuntimeError, match="already served"):
            t.serve(0, addr="127.0.0.1")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(body)}
        val_acc = families["trainpipe_val_accuracy"].samples[0]
        assert val_acc.value == 0.78 and val_acc.labels == LABELS
    finally:
        t.close()
    t.close()  # idempotent
    assert set(threading.enumerate()) <= threads_before  # the server thread has ended
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


# ---------------------------------------------------------------- GpuMonitor


def test_gpu_monitor_without_nvml_is_a_quiet_no_op():
    """This machine has no NVIDIA driver: the monitor says so and does nothing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("NVML works here; the unavailable path is tested where it does not")
    except pynvml.NVMLError:
        pass
    mon = gm.GpuMonitor(interval_s=0.01)
    assert mon.available is False
    assert "NVML" in (mon.reason or "")
    assert mon.start() is mon
    time.sleep(0.05)
    assert not any(th.name == "gpu-monitor" for th in threading.enumerate())
    assert mon.sample() is None and mon.latest() is None
    s = mon.summary()
    assert s["samples"] == 0
    assert s["util_mean"] is None and s["util_max"] is None and s["memory_max_bytes"] is None
    assert s["reason"] == mon.reason
    mon.stop()


class FakeNvml(types.ModuleType):
    """Enough of pynvml for GpuMonitor: two GPUs whose utilization the test sets."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.util = {0: 10.0, 1: 80.0}
        self.used = {0: 1 * 2**30, 1: 5 * 2**30}
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return {"GPU-aaa": 0, "GPU-bbb": 1}[uuid]

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used[h], total=80 * 2**30, free=0)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.util[h], memory=0)


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_gpu_monitor_samples_in_background_and_summarises(fake_nvml):
    seen: list[gm.GpuSample] = []
    mon = gm.GpuMonitor(interval_s=0.01, device_index=1, on_sample=seen.append)
    assert mon.available and mon.reason is None
    assert mon.summary()["reason"]  # available, but no sample yet
    with mon:
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        fake_nvml.util[1], fake_nvml.used[1] = 100.0, 7 * 2**30
        n = len(seen)
        while len(seen) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert fake_nvml.inits == 0  # NVML released on stop
    s = mon.summary()
    assert s["samples"] == len(seen) >= 5
    assert 80.0 < s["util_mean"] < 100.0
    assert s["util_max"] == 100.0
    assert s["memory_max_bytes"] == 7 * 2**30
    assert s["memory_total_bytes"] == 80 * 2**30
    assert s["name"] == "NVIDIA H100 80GB HBM3" and s["reason"] is None
    assert mon.latest() == seen[-1] and seen[-1].device == "cuda:1"
    count = s["samples"]
    time.sleep(0.05)
    assert mon.summary()["samples"] == count  # the thread has stopped


def test_gpu_monitor_maps_cuda_visible_devices(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what Ray sets for a worker on GPU 1
    sample = gm.GpuMonitor(device_index=0).sample()
    assert sample is not None and sample.util_percent == 80.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb,GPU-aaa")
    sample = gm.GpuMonitor(device_index=1).sample()
    assert sample is not None and sample.util_percent == 10.0
    missing = gm.GpuMonitor(device_index=2)
    assert not missing.available and "not visible" in (missing.reason or "")


def test_gpu_monitor_survives_a_failing_callback(fake_nvml):
    def boom(sample):
        raise RuntimeError("callback bug")

    mon = gm.GpuMonitor(interval_s=0.01, on_sample=boom)
    assert mon.sample() is not None  # the callback's error is logged, not raised
    mon.start()
    time.sleep(0.2)
    mon.stop()
    assert mon.summary()["samples"] >= 3


def test_format_sample_is_the_engine_log_line():
    s = gm.GpuSample(0.0, "cuda:0", "H100", 87.4, int(12.3 * 2**30), 80 * 2**30)
    assert gm.format_sample(s) == "GPU Util: 87% | Mem: 12.3/80.0 GB"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_gpu_monitor_sees_a_busy_gpu():
    lines = []
    mon = gm.GpuMonitor(interval_s=0.2, on_sample=lambda s: lines.append(gm.format_sample(s)))
    assert mon.available, mon.reason
    a = torch.randn(4096, 4096, device="cuda")
    with mon:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for _ in range(20):
                a = (a @ a).tanh_()
            torch.cuda.synchronize()
    s = mon.summary()
    assert s["samples"] >= 5, s
    assert s["util_mean"] > 0, s
    assert s["memory_max_bytes"] > 4096 * 4096 * 4, s
    assert lines and lines[-1].startswith("GPU Util: ")
