"""``trainpipe operator``: configure, then hand over to kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import kopf

from trainpipe_operator.admission import webhook
from trainpipe_operator.admission.approval import ApprovalKey
from trainpipe_operator.controller import handlers
from trainpipe_operator.controller.api_clients import kubernetes_clients
from trainpipe_operator.controller.health_server import HealthServer
from trainpipe_operator.controller.metrics import METRICS
from trainpipe_operator.controller.readiness import READINESS, Readiness
from trainpipe_operator.controller.readiness_checks import can_list_pipelines, kopf_started
from trainpipe_operator.controller.reconcile import Reconciler
from trainpipe_operator.controller.reconcile_pool import ReconcilePool, WorkerSetup
from trainpipe_operator.controller.settings import OperatorSettings

SWITCH_INTERVAL_S = 0.0005
#: Run in each reconcile worker at its start (the benchmark's instant runtime sets it).
WORKER_SETUP: WorkerSetup | None = None


def webhook_serving() -> str | None:
    """Readiness of the admission webhook: the API server refuses every
    pipeline write (failurePolicy Fail) until it listens."""
    return None if webhook.is_serving() else "the admission webhook is not listening yet"


def run_operator(settings: OperatorSettings, kubeconfig: Path | None = None, json_logs: bool = True) -> int:
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own login reads it
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    # The event loop (watch events, first statuses, liveness) shares the GIL
    # with any thread that reconciles (--reconcile-processes 0) or stops a
    # job; at the default 5 ms switch interval, every time the loop wakes
    # from I/O it could wait that long behind one.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    core, custom = kubernetes_clients(kubeconfig)
    # The approval key lives only in this process and its reconcile workers:
    # the webhook signs with it, the reconciler acts only on what it signed.
    # No webhook: no key, no approval.
    key = ApprovalKey() if settings.webhook_port else None
    handlers.RECONCILER = Reconciler(settings, core, custom, approval_key=key)
    if settings.reconcile_processes < 0:
        raise SystemExit(f"--reconcile-processes (TRAINPIPE_RECONCILE_PROCESSES) is {settings.reconcile_processes}: "
                         "allowed are 0 (a thread of the operator's process) or more worker processes")
    if settings.api_connections < 0:
        raise SystemExit(f"--api-connections (TRAINPIPE_API_CONNECTIONS) is {settings.api_connections}: "
                         "allowed are 0 (no limit) or more connections")
    handlers.WATCHED_NAMESPACES = len(settings.namespaces)
    handlers.API_CONNECTIONS = settings.api_connections
    pool = ReconcilePool(settings, kubeconfig, key, settings.reconcile_processes, handlers.RECONCILER,
                         worker_setup=WORKER_SETUP)
    handlers.RECONCILE_POOL = pool
    registry = handlers.register(settings.poll_seconds)
    if key is not None:
        webhook.register(webhook.Webhook(settings, key, webhook.kubernetes_review(core.api_client)),
                         registry)
    if settings.metrics_port:
        METRICS.serve(settings.metrics_port)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    logging.getLogger("trainpipe").setLevel(logging.INFO)
    if key is not None:
        READINESS.register("admission", webhook_serving)
    try:
        asyncio.run(_operate(registry, settings, custom, READINESS))
    finally:
        pool.shutdown()
    return 0


async def _operate(registry: kopf.OperatorRegistry, settings: OperatorSettings, custom: object,
                   readiness: Readiness) -> None:
    """kopf, with /healthz and /readyz served beside it (``health_server``).
    kopf's own liveness endpoint is not used: it serves one path, and its
    probe handlers' failure would fail liveness too."""
    started = asyncio.Event()
    readiness.register("kopf", kopf_started(started))
    readiness.register("watch", can_list_pipelines(custom, settings.namespaces))
    server = (HealthServer(readiness, asyncio.get_running_loop(), settings.liveness_port).start()
              if settings.liveness_port else None)
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            ready_flag=started,
            standalone=True,
        )
    finally:
        if server is not None:
            server.stop()
