"""The operator's own metrics (prometheus-client), named ``trainpipe_operator_*``."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from trainpipe_operator.spec.status import PHASES

#: Gate names as the ``gate`` label carries them (the status's gate keys without the iteration).
GATES = ("planning", "baseline", "diagnostics", "optimization", "finalization")
RUNTIMES = ("local", "ray", "rayjob")
#: The ``kind`` label of reconcile errors: where the error came from.
ERROR_KINDS = ("kubernetes", "ray", "storage", "other")


def error_kind(exc: BaseException) -> str:
    """A fixed, small label value for an exception (its type goes to the log)."""
    module = type(exc).__module__ or ""
    if module.startswith(("kubernetes", "urllib3")):
        return "kubernetes"
    if module.startswith("ray"):
        return "ray"
    if isinstance(exc, OSError):
        return "storage"
    return "other"


class MetricsSink(Protocol):
    """What a reconcile reports: the operator's registry in-process, a
    recording (``MetricCalls``) in a reconcile worker process."""

    def set_phase(self, key: str, phase: str | None, since: float | None = None) -> None: ...
    def set_progress(self, key: str, phase: str | None, epoch: int = 0, epochs: int = 0,
                     eta_seconds: float | None = None) -> None: ...
    def phase_finished(self, phase: str, seconds: float) -> None: ...
    def stalled(self, runtime: str) -> None: ...
    def gate_evaluated(self, gate: str, passed: bool) -> None: ...
    def submitted(self, runtime: str, submission_id: str) -> None: ...


class MetricCalls:
    """A ``MetricsSink`` that records each call, to be replayed onto the
    operator's registry (``replay``) by the process that serves /metrics."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def set_phase(self, key: str, phase: str | None, since: float | None = None) -> None:
        self.calls.append(("set_phase", (key, phase, since)))

    def set_progress(self, key: str, phase: str | None, epoch: int = 0, epochs: int = 0,
                     eta_seconds: float | None = None) -> None:
        self.calls.append(("set_progress", (key, phase, epoch, epochs, eta_seconds)))

    def phase_finished(self, phase: str, seconds: float) -> None:
        self.calls.append(("phase_finished", (phase, seconds)))

    def stalled(self, runtime: str) -> None:
        self.calls.append(("stalled", (runtime,)))

    def gate_evaluated(self, gate: str, passed: bool) -> None:
        self.calls.append(("gate_evaluated", (gate, passed)))

    def submitted(self, runtime: str, submission_id: str) -> None:
        self.calls.append(("submitted", (runtime, submission_id)))


REPLAYABLE = frozenset({"set_phase", "set_progress", "phase_finished", "stalled", "gate_evaluated", "submitted"})


def replay(calls: list[tuple[str, tuple[Any, ...]]], sink: MetricsSink) -> None:
    for name, args in calls:
        if name in REPLAYABLE:  # nothing else is called on the registry from a worker's record
            getattr(sink, name)(*args)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pipelines = Gauge("trainpipe_operator_pipelines", "TrainingPipelines by phase.", ["phase"], registry=r)
        self.gate_results = Counter("trainpipe_operator_gate_results_total", "Gate evaluations by gate and result.",
                                    ["gate", "result"], registry=r)
        self.phase_seconds = Histogram(
            "trainpipe_operator_phase_duration_seconds", "Seconds a pipeline spent in a phase.", ["phase"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 48 * 3600), registry=r)
        self.submissions = Counter("trainpipe_operator_job_submissions_total", "Jobs submitted.", ["runtime"],
                                   registry=r)
        self.resubmissions = Counter("trainpipe_operator_job_resubmissions_total",
                                     "Jobs submitted again (attempt > 1) after a failure or a stop.", ["runtime"],
                                     registry=r)
        self.reconcile_errors = Counter("trainpipe_operator_reconcile_errors_total", "Reconciles that raised, by where the error came from (kubernetes, ray, storage, other).",
                                        ["kind"], registry=r)
        self.reconcile_seconds = Histogram("trainpipe_operator_reconcile_seconds", "Seconds per reconcile.",
                                           registry=r)
        self.reconcile_deferred_seconds = Histogram(
            "trainpipe_operator_reconcile_deferred_seconds",
            "Seconds a reconcile waited for new pipelines' first statuses (a creation burst), when it waited.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.phase_entered = Gauge(
            "trainpipe_operator_pipeline_phase_entered_timestamp_seconds",
            "Unix time each pipeline entered the phase it is in (one series per pipeline).",
            ["namespace", "pipeline", "phase"], registry=r)
        self.job_stalls = Counter(
            "trainpipe_operator_job_stalls_total",
            "Training jobs declared hung (no heartbeat for spec.gates.stallTimeout, or none within startTimeout), "
            "stopped and resubmitted.",
            ["runtime"], registry=r)
        self.pipeline_eta = Gauge(
            "trainpipe_operator_pipeline_eta_seconds",
            "Seconds a running pipeline may still need (status.progress.pipelineEtaSeconds, an upper bound).",
            ["namespace", "pipeline"], registry=r)
        self.pipeline_epoch = Gauge(
            "trainpipe_operator_pipeline_epoch", "Epochs the running job of a pipeline has completed.",
            ["namespace", "pipeline", "phase"], registry=r)
        self.pipeline_epochs = Gauge(
            "trainpipe_operator_pipeline_epochs", "Epochs the running job of a pipeline trains.",
            ["namespace", "pipeline", "phase"], registry=r)
        self._progress_of: dict[str, str] = {}  # key -> the phase its epoch series carries
        self._phase_of: dict[str, str] = {}
        self._lock = threading.Lock()
        # Every known label value exists at 0 from the start, so that rate(),
        # increase() and the dashboard see a series before the first event.
        for phase in PHASES:
            self.pipelines.labels(phase).set(0)
            self.phase_seconds.labels(phase)
        for gate in GATES:
            for result in ("passed", "failed"):
                self.gate_results.labels(gate, result)
        for kind in ERROR_KINDS:
            self.reconcile_errors.labels(kind)
        for runtime in RUNTIMES:
            self.submissions.labels(runtime)
            self.resubmissions.labels(runtime)
            self.job_stalls.labels(runtime)

    def set_phase(self, key: str, phase: str | None, since: float | None = None) -> None:
        """Track one pipeline's phase (None: it is gone); ``key`` is
        ``namespace/name``, ``since`` the Unix time it entered the phase."""
        namespace, _, name = key.partition("/")
        with self._lock:
            old = self._phase_of.get(key)
            if old is not None and old != phase:
                self.phase_entered.remove(namespace, name, old)
            if phase is None:
                self._phase_of.pop(key, None)
                self._drop_progress(key)
            else:
                self._phase_of[key] = phase
                if old != phase or since is not None:
                    self.phase_entered.labels(namespace, name, phase).set(since if since is not None else time.time())
            counts = {p: 0 for p in PHASES}
            for value in self._phase_of.values():
                counts[value] = counts.get(value, 0) + 1
            for p, n in counts.items():
                self.pipelines.labels(p).set(n)

    def set_progress(self, key: str, phase: str | None, epoch: int = 0, epochs: int = 0,
                     eta_seconds: float | None = None) -> None:
        """One pipeline's running job (status.progress); ``phase`` None: none runs."""
        namespace, _, name = key.partition("/")
        with self._lock:
            if phase is None or self._progress_of.get(key) != phase:
                self._drop_progress(key)
            if phase is None:
                return
            self._progress_of[key] = phase
            self.pipeline_epoch.labels(namespace, name, phase).set(epoch)
            self.pipeline_epochs.labels(namespace, name, phase).set(epochs)
            if eta_seconds is not None:
                self.pipeline_eta.labels(namespace, name).set(eta_seconds)

    def _drop_progress(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        old = self._progress_of.pop(key, None)
        if old is not None:
            for gauge in (self.pipeline_epoch, self.pipeline_epochs):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name, old)
            with contextlib.suppress(KeyError):
                self.pipeline_eta.remove(namespace, name)

    def phase_finished(self, phase: str, seconds: float) -> None:
        self.phase_seconds.labels(phase).observe(seconds)

    def stalled(self, runtime: str) -> None:
        self.job_stalls.labels(runtime).inc()

    def gate_evaluated(self, gate: str, passed: bool) -> None:
        self.gate_results.labels(gate, "passed" if passed else "failed").inc()

    def submitted(self, runtime: str, submission_id: str) -> None:
        self.submissions.labels(runtime).inc()
        if not submission_id.endswith("-a1"):
            self.resubmissions.labels(runtime).inc()

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


METRICS = OperatorMetrics()
