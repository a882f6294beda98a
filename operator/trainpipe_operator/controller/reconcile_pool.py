"""Where reconciles run: in worker processes (the default), so the
operator's event loop only handles watch events and status patches.

A reconcile is mostly CPU under the GIL (gates, reports, run-directory
files). Run in a thread of the operator's process, it takes the GIL from the
event loop that writes each new pipeline's first status and answers the
probes: at 500 pipelines the first status took up to 2.4 times as long as
with no reconciles at all (bench/operator_scale.py). In another process it
takes a CPU, never the loop's interpreter.

Each worker builds its own Reconciler once (its own API clients, its own Ray
launcher cache). A reconcile sends the resource's body and gets back the
TickResult and the metric updates it made (``MetricCalls``), which the
operator applies to the registry it serves. ``processes=0`` keeps the old
way, one thread in the operator's process (for debugging, and as the
benchmark's comparison). Workers run at a lower CPU priority (nice +10) than
the event loop, so the first status of a new pipeline does not wait behind
reconcile work when CPU is short.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from trainpipe_operator.admission.approval import ApprovalKey
from trainpipe_operator.controller.metrics import (
    METRICS,
    MetricCalls,
    MetricsSink,
    error_kind,
    replay,
)
from trainpipe_operator.controller.reconcile import Reconciler, TickResult
from trainpipe_operator.controller.settings import OperatorSettings

log = logging.getLogger("trainpipe.operator")

#: Added to a reconcile worker's nice value (lower CPU priority than the operator's own process).
WORKER_NICENESS = 10

#: Run in each worker before its first reconcile (the benchmark swaps the
#: launcher here); a module-level function, so it can be sent to a worker.
WorkerSetup = Callable[[], None]


class ReconcileFailed(Exception):
    """A reconcile raised; ``kind`` is its metrics label (``error_kind``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ReconcilePool:
    """Runs ``Reconciler.reconcile`` for the kopf timer, off the event loop."""

    def __init__(self, settings: OperatorSettings, kubeconfig: Path | None, approval_key: ApprovalKey | None,
                 processes: int, in_process: Reconciler, metrics: MetricsSink = METRICS,
                 worker_setup: WorkerSetup | None = None) -> None:
        self.settings, self.kubeconfig, self.processes = settings, kubeconfig, processes
        self._key = approval_key.secret if approval_key is not None else None
        self._in_process = in_process
        self._metrics = metrics
        self._setup = worker_setup
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.Executor:
        if self.processes <= 0:
            return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        # spawn: a fresh interpreter. A fork of this process would copy kopf's
        # threads' locks in whatever state they were in.
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(self.settings, self.kubeconfig, self._key, self._setup))

    async def reconcile(self, body: dict[str, Any]) -> TickResult:
        """The reconcile's result; its metric updates are applied here.

        Raises:
            ReconcileFailed: the reconcile raised (an API hiccup, a Secret
                not there yet); kopf retries it.
        """
        loop = asyncio.get_running_loop()
        if self.processes <= 0:
            try:
                return await loop.run_in_executor(self._executor, self._in_process.reconcile, body)
            except Exception as exc:
                raise ReconcileFailed(error_kind(exc), f"{type(exc).__name__}: {exc}") from exc
        try:
            result, calls, failure = await loop.run_in_executor(self._executor, _reconcile_in_worker, _plain(body))
        except BrokenProcessPool as exc:
            # A worker died (killed, out of memory): a new pool for the next
            # reconcile; this one is retried.
            log.warning("a reconcile worker process died (%s); starting new ones", exc)
            old, self._executor = self._executor, self._new_executor()
            old.shutdown(wait=False, cancel_futures=True)
            raise ReconcileFailed("other", f"the reconcile worker process died: {exc}") from exc
        replay(calls, self._metrics)
        if failure is not None or result is None:
            raise ReconcileFailed(*(failure or ("other", "the reconcile worker returned no result")))
        return result

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _plain(body: Any) -> Any:
    """The body as plain dicts and lists, to be pickled to a worker."""
    return json.loads(json.dumps(body))


# ------------------------------------------------------------ in a worker
_WORKER: Reconciler | None = None


def _start_worker(settings: OperatorSettings, kubeconfig: Path | None, key: bytes | None,
                  setup: WorkerSetup | None) -> None:
    global _WORKER
    _die_with_parent()
    # When CPU is short, the operator's event loop (watch events, status
    # patches, probes) and, on a shared machine, the API server go first:
    # a reconcile only moves a pipeline on a second sooner or later.
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the operator stops its workers, not Ctrl-C
    _log_json_lines()
    from trainpipe_operator.controller import api_clients

    if setup is not None:
        setup()
    # Made at first use: a worker whose pipelines read no Secret and make
    # no RayJob never imports the kubernetes client.
    core, custom = api_clients.lazy_kubernetes_clients(kubeconfig)
    _WORKER = Reconciler(settings, core, custom, approval_key=ApprovalKey(key) if key else None)


def _reconcile_in_worker(body: dict[str, Any]) -> tuple[TickResult | None, list[tuple[str, tuple[Any, ...]]],
                                                       tuple[str, str] | None]:
    """(result, metric calls, None), or (None, metric calls, (kind, message)):
    an exception is sent back as text, as not every one can be pickled."""
    assert _WORKER is not None, "the reconcile worker was not started"
    calls = MetricCalls()
    _WORKER.metrics = calls
    try:
        return _WORKER.reconcile(body), calls.calls, None
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the operator, which retries
        return None, calls.calls, (error_kind(exc), f"{type(exc).__name__}: {exc}")


def _die_with_parent() -> None:
    """Linux: the kernel ends this worker when the operator's process ends,
    however it ends (a SIGKILL leaves no one to shut the pool down)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"timestamp": self.formatTime(record), "severity": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage(), "process": "reconcile-worker"}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _log_json_lines() -> None:
    """The worker logs as the operator does: JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("trainpipe").setLevel(logging.INFO)
