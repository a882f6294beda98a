"""The trainer's Prometheus metrics: what the operator and Grafana read about a running job.

Why a class with its own registry: a process may train more than one phase (and
the tests build many instances), and prometheus_client's global registry refuses
a second metric of the same name. Each ``TrainingTelemetry`` owns a
``CollectorRegistry`` and, when asked, one HTTP server that exports only it.

Every series carries the same fixed labels, with the values given at
construction: always ``LABEL_NAMES`` (missing ones are ""), plus any other
valid label the job config adds (``JobConfig.labels``), so that a query such as
``trainpipe_val_accuracy{pipeline="digits"}`` finds one job's numbers. Note that
Prometheus attaches its own ``job`` label (the scrape job) to every series; with
the default ``honor_labels: false`` the trainer's ``job`` label is kept as
``exported_job``. Query the trainer's job by ``exported_job`` (or ``pipeline``).

``METRICS`` is the one documented list: a unit test checks that it and what is
exported agree, and the README renders it with ``markdown_table()``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: The labels on every trainpipe series; values missing at construction are "".
LABEL_NAMES: tuple[str, ...] = ("pipeline", "phase", "job")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Names a job may not use: Prometheus reserves "__*", histograms use "le", GPU series "device".
_RESERVED = {"le", "quantile", "device", "instance", "metric"}

EPOCH_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, math.inf)
CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, math.inf)


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its name as PromQL sees it, its type, help and label names."""

    name: str
    type: str  # "gauge" | "counter" | "histogram"
    help: str
    labels: tuple[str, ...] = LABEL_NAMES


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "trainpipe_train_step_loss", "gauge", "Training loss of the most recent optimizer step."
    ),
    MetricSpec(
        "trainpipe_learning_rate", "gauge", "Learning rate of the most recent optimizer step."
    ),
    MetricSpec(
        "trainpipe_grad_norm",
        "gauge",
        "Total gradient norm (before clipping) of the most recent step.",
    ),
    MetricSpec(
        "trainpipe_samples_per_second",
        "gauge",
        "Training throughput of the most recent step, in samples per second.",
    ),
    MetricSpec("trainpipe_train_steps_total", "counter", "Optimizer steps taken."),
    MetricSpec("trainpipe_train_samples_total", "counter", "Training samples processed."),
    MetricSpec(
        "trainpipe_skipped_steps_total",
        "counter",
        "Steps skipped because the loss or a gradient was not finite.",
    ),
    MetricSpec("trainpipe_epoch", "gauge", "Number of the last completed epoch."),
    MetricSpec("trainpipe_train_loss", "gauge", "Mean training loss of the last completed epoch."),
    MetricSpec("trainpipe_val_loss", "gauge", "Validation loss of the last completed epoch."),
    MetricSpec(
        "trainpipe_train_accuracy", "gauge", "Training accuracy (0-1) of the last completed epoch."
    ),
    MetricSpec(
        "trainpipe_val_accuracy", "gauge", "Validation accuracy (0-1) of the last completed epoch."
    ),
    MetricSpec(
        "trainpipe_val_top5_accuracy",
        "gauge",
        "Validation top-5 accuracy (0-1) of the last completed epoch.",
    ),
    MetricSpec(
        "trainpipe_eta_seconds", "gauge", "Estimated seconds until the phase's training ends."
    ),
    MetricSpec(
        "trainpipe_task_metric",
        "gauge",
        "A task's metric of the last completed epoch, by name (val_acc, val_recon, val_kl, ...).",
        (*LABEL_NAMES, "metric"),
    ),
    MetricSpec(
        "trainpipe_epoch_duration_seconds",
        "histogram",
        "Wall-clock seconds per epoch (training and validation).",
    ),
    MetricSpec(
        "trainpipe_checkpoint_save_seconds", "histogram", "Seconds taken to write a checkpoint."
    ),
    MetricSpec(
        "trainpipe_resumed_from_epoch",
        "gauge",
        "Epoch the job resumed from (its checkpoint's epoch).",
    ),
    MetricSpec("trainpipe_resumes_total", "counter", "Times the job resumed from a checkpoint."),
    MetricSpec(
        "trainpipe_gpu_utilization_percent",
        "gauge",
        "GPU utilization (NVML), percent.",
        (*LABEL_NAMES, "device"),
    ),
    MetricSpec(
        "trainpipe_gpu_memory_used_bytes",
        "gauge",
        "GPU memory in use (NVML), bytes.",
        (*LABEL_NAMES, "device"),
    ),
)


def markdown_table() -> str:
    """Render ``METRICS`` as a Markdown table (for the README)."""
    rows = ["| Metric | Type | Labels | Description |", "|---|---|---|---|"]
    for spec in METRICS:
        labels = ", ".join(f"`{name}`" for name in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.type} | {labels} | {spec.help} |")
    return "\n".join(rows) + "\n"


class TrainingTelemetry:
    """Prometheus metrics for one training job, in a registry of its own."""

    def __init__(self, labels: dict[str, str], registry: CollectorRegistry | None = None):
        extra = sorted(set(labels) - set(LABEL_NAMES))
        bad = [n for n in extra if not _LABEL_RE.match(n) or n.startswith("__") or n in _RESERVED]
        if bad:
            raise ValueError(f"invalid telemetry label names {bad}")
        self.label_names: tuple[str, ...] = (*LABEL_NAMES, *extra)
        self.labels: dict[str, str] = {n: str(labels.get(n, "")) for n in self.label_names}
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, Gauge | Counter | Histogram] = {}
        for spec in METRICS:
            self._metrics[spec.name] = self._build(spec)
        # Counters and histograms exist (at 0) from the start so that rate() and
        # increase() see the first step; gauges appear when first set, so that an
        # absent value (no top-5, no GPU) reads as absent rather than as 0.
        for spec in METRICS:
            if spec.type != "gauge":
                self._child(spec.name)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _build(self, spec: MetricSpec) -> Gauge | Counter | Histogram:
        names = (*self.label_names, *spec.labels[len(LABEL_NAMES) :])  # + "device" for GPU series
        if spec.type == "gauge":
            return Gauge(spec.name, spec.help, names, registry=self.registry)
        if spec.type == "counter":
            # prometheus_client appends "_total" itself.
            name = spec.name.removesuffix("_total")
            return Counter(name, spec.help, names, registry=self.registry)
        if spec.type == "histogram":
            buckets = CHECKPOINT_BUCKETS if "checkpoint" in spec.name else EPOCH_BUCKETS
            return Histogram(spec.name, spec.help, names, registry=self.registry, buckets=buckets)
        raise ValueError(f"unknown metric type {spec.type!r} for {spec.name}")

    def _child(self, name: str, **extra: str) -> Any:
        return self._metrics[name].labels(**self.labels, **extra)

    def _set(self, name: str, value: float | None, **extra: str) -> None:
        if value is not None:
            self._child(name, **extra).set(float(value))

    def on_step(
        self,
        loss: float,
        lr: float,
        grad_norm: float | None,
        samples_per_second: float,
        samples: int,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record one optimizer step (grad_norm None: not computed, left as it
        was); ``metrics``: the task's per-step values, by name."""
        self._set("trainpipe_train_step_loss", loss)
        self._set("trainpipe_learning_rate", lr)
        self._set("trainpipe_grad_norm", grad_norm)
        self._set("trainpipe_samples_per_second", samples_per_second)
        self._child("trainpipe_train_steps_total").inc()
        self._child("trainpipe_train_samples_total").inc(samples)
        for name, value in (metrics or {}).items():
            if math.isfinite(value):
                self._set("trainpipe_task_metric", value, metric=name)

    def on_skip(self) -> None:
        """Record a step skipped for a non-finite loss or gradient."""
        self._child("trainpipe_skipped_steps_total").inc()

    def on_epoch(
        self,
        num: int,
        train_loss: float,
        val_loss: float,
        train_acc: float | None = None,
        val_acc: float | None = None,
        epoch_seconds: float = 0.0,
        eta_seconds: float | None = None,
        val_top5: float | None = None,
        metrics: Mapping[str, float | None] | None = None,
    ) -> None:
        """Record a completed epoch's summary (None values are left unset).
        ``metrics``: the task's metrics by name, each exported as
        ``trainpipe_task_metric{metric=NAME}``; those with a dedicated series
        (train_acc, val_acc, val_top5) also set it."""
        metrics = dict(metrics or {})
        self._set("trainpipe_epoch", num)
        self._set("trainpipe_train_loss", train_loss)
        self._set("trainpipe_val_loss", val_loss)
        self._set("trainpipe_train_accuracy", train_acc if train_acc is not None else metrics.get("train_acc"))
        self._set("trainpipe_val_accuracy", val_acc if val_acc is not None else metrics.get("val_acc"))
        self._set("trainpipe_val_top5_accuracy", val_top5 if val_top5 is not None else metrics.get("val_top5"))
        self._set("trainpipe_eta_seconds", eta_seconds)
        for name, value in metrics.items():
            if value is not None and math.isfinite(value):
                self._set("trainpipe_task_metric", value, metric=name)
        self._child("trainpipe_epoch_duration_seconds").observe(epoch_seconds)

    def on_checkpoint(self, seconds: float) -> None:
        """Record how long a checkpoint took to write."""
        self._child("trainpipe_checkpoint_save_seconds").observe(seconds)

    def on_resume(self, epoch: int) -> None:
        """Record that the job resumed from a checkpoint of ``epoch``."""
        self._set("trainpipe_resumed_from_epoch", epoch)
        self._child("trainpipe_resumes_total").inc()

    def on_gpu(self, util_percent: float, memory_bytes: int, device: str) -> None:
        """Record one NVML sample of one GPU."""
        self._set("trainpipe_gpu_utilization_percent", util_percent, device=device)
        self._set("trainpipe_gpu_memory_used_bytes", memory_bytes, device=device)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Export this registry over HTTP (``/metrics``); port 0 picks a free one. Returns the port."""
        if self._server is not None:
            raise RuntimeError(f"telemetry is already served on port {self._server.server_port}")
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP server, if one runs. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TrainingTelemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
