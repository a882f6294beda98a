"""``trainpipe operator``: configure, then hand over to kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from trainpipe_operator.admission import webhook
from trainpipe_operator.admission.approval import ApprovalKey
from trainpipe_operator.controller import handlers
from trainpipe_operator.controller.metrics import METRICS
from trainpipe_operator.controller.reconcile import Reconciler
from trainpipe_operator.controller.settings import OperatorSettings


def _kubernetes_clients(kubeconfig: Path | None) -> tuple[object, object]:
    from kubernetes import client, config

    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig))
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api(), client.CustomObjectsApi()


SWITCH_INTERVAL_S = 0.0005


def run_operator(settings: OperatorSettings, kubeconfig: Path | None = None, json_logs: bool = True) -> int:
    import kopf

    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own login reads it
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    # The event loop (watch events, first statuses, liveness) shares the GIL
    # with the reconcile thread; at the default 5 ms switch interval, every
    # time the loop wakes from I/O it can wait that long behind a reconcile.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    core, custom = _kubernetes_clients(kubeconfig)
    # The approval key lives only in this process: the webhook signs with it,
    # the reconciler acts only on what it signed. No webhook: no key, no approval.
    key = ApprovalKey() if settings.webhook_port else None
    handlers.RECONCILER = Reconciler(settings, core, custom, approval_key=key)
    registry = handlers.register(settings.poll_seconds)
    if key is not None:
        webhook.register(webhook.Webhook(settings, key, webhook.kubernetes_review(core.api_client)),  # type: ignore[attr-defined]
                         registry)
    if settings.metrics_port:
        METRICS.serve(settings.metrics_port)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    logging.getLogger("trainpipe").setLevel(logging.INFO)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    asyncio.run(kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        standalone=True,
    ))
    return 0
