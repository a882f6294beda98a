"""kopf handlers: thin. Each takes ``**kwargs``, returns early when there is
nothing to do, and delegates to the Reconciler.

- a timer per TrainingPipeline reconciles it every ``poll_seconds`` (jobs
  are polled by the timer, never by a loop), in a reconcile worker process
  (``reconcile_pool``), so the event loop stays free;
- a finalizer (kopf's, on the delete handler) stops the running job first;
- a new object gets its first status on the first event (with kopf's
  finalizer); a resumed one is counted in the metrics at once;
- while first statuses are on their way, reconciles wait (``arrivals``):
  a burst of new pipelines is acknowledged before old ones are polled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import kopf

from trainpipe_operator.controller.arrivals import Arrivals
from trainpipe_operator.controller.metrics import METRICS
from trainpipe_operator.controller.reconcile import (
    STATUS_FIELDS,
    Reconciler,
    TickResult,
    phase_entered_at,
    read_status,
)
from trainpipe_operator.controller.reconcile_pool import ReconcileFailed, ReconcilePool
from trainpipe_operator.controller.status_patch import merge_patch
from trainpipe_operator.lifecycle import ttl
from trainpipe_operator.pipeline import machine

GROUP, VERSION, PLURAL = "trainpipe.io", "v1alpha1", "trainingpipelines"
log = logging.getLogger("trainpipe.operator")

RECONCILE_WORKERS = 1
RECONCILER: Reconciler | None = None  # set by main.run_operator before kopf starts: deletion's job stop
RECONCILE_POOL: ReconcilePool | None = None  # likewise: where the timer's reconciles run
ARRIVALS = Arrivals()  # first statuses on their way: reconciles wait for them


def _reconciler() -> Reconciler:
    if RECONCILER is None:
        raise kopf.PermanentError("the operator's reconciler is not configured")
    return RECONCILER


def _apply(result: TickResult, body: Any, patch: kopf.Patch) -> None:
    # No nulls in the dump: null is sent only for what the stored status has
    # and the new one does not (merge_patch), which deletes it.
    status = result.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    # An unchanged status is not written: every write is a new resourceVersion
    # and a watch event for every client, once per pipeline per poll.
    stored = dict(body.get("status") or {})
    if status != stored:
        # What is gone becomes null; only the fields our status model owns.
        patch.status.update(merge_patch({k: v for k, v in stored.items() if k in STATUS_FIELDS}, status))
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _pool() -> ReconcilePool:
    if RECONCILE_POOL is None:
        raise kopf.PermanentError("the operator's reconcile workers are not configured")
    return RECONCILE_POOL


async def _tick(body: Any, patch: kopf.Patch) -> None:
    started = time.perf_counter()
    try:
        result = await _pool().reconcile(dict(body))
    except ReconcileFailed as exc:
        METRICS.reconcile_errors.labels(exc.kind).inc()
        # "Not yet" (an API hiccup, a Secret not created yet): kopf retries.
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=10) from exc
    finally:
        METRICS.reconcile_seconds.observe(time.perf_counter() - started)
    _apply(result, body, patch)


def _accepted(meta: Any) -> dict[str, Any]:
    return {"phase": "Pending", "message": "accepted; waiting for the first reconcile",
            "observedGeneration": meta.get("generation")}


async def accept(status: Any, meta: Any, patch: kopf.Patch, **_: Any) -> None:
    """The first status of a new pipeline (Pending, accepted), written on the
    very first event: kopf sends this patch together with its finalizer,
    where a creation handler would wait for the finalizer's round trip.
    Async, so it never queues behind reconciles in kopf's thread pool; the
    timer does the work."""
    if (status or {}).get("phase") or meta.get("deletionTimestamp"):
        ARRIVALS.stored(str(meta.get("uid")))
        return
    ARRIVALS.sent(str(meta.get("uid")))
    patch.status.update(_accepted(meta))
    METRICS.set_phase(f"{meta.get('namespace')}/{meta.get('name')}", "Pending")


async def start(body: Any, status: Any, meta: Any, patch: kopf.Patch, **_: Any) -> None:
    """Creation and resumption (an operator restart): count a pipeline that
    already has a phase in the metrics now (a finished one has no timer);
    give one that has none its first status (should ``accept`` have failed:
    kopf ignores errors in event handlers)."""
    phase = (status or {}).get("phase")
    if not phase:
        await accept(status=status, meta=meta, patch=patch)
        return
    METRICS.set_phase(f"{meta.get('namespace')}/{meta.get('name')}", phase,
                      phase_entered_at(read_status(dict(body))))


def running(status: Any, spec: Any = None, **_: Any) -> bool:
    """The poll timer's filter: kopf stops the timer of a finished pipeline
    (one whose tracking is still owed something keeps it, to send that; one
    whose ttlSecondsAfterFinished cleanup is to come keeps it, to do that)."""
    status = status or {}
    return (status.get("phase") not in machine.TERMINAL or bool((status.get("tracking") or {}).get("pending"))
            or ttl.pending(spec, status))


async def poll(body: Any, status: Any, spec: Any, patch: kopf.Patch, **_: Any) -> None:
    """Async, awaiting a reconcile worker: the event loop stays free for
    other pipelines' events and patches meanwhile. New pipelines' first
    statuses go first (``arrivals``)."""
    if not running(status, spec):
        return
    waited = await ARRIVALS.settled()
    if waited:
        METRICS.reconcile_deferred_seconds.observe(waited)
    await _tick(body, patch)


def stop(body: Any, meta: Any, **_: Any) -> None:
    stopped = _reconciler().stop_running_job(dict(body))
    METRICS.set_phase(f"{meta.get('namespace')}/{meta.get('name')}", None)
    if stopped:
        log.info("stopped job %s of %s/%s before deletion", stopped, meta.get("namespace"), meta.get("name"))


#: Connections for requests other than watches (``OperatorSettings.api_connections``; 0: no limit).
API_CONNECTIONS = 64
#: Namespaces the operator watches (``OperatorSettings.namespaces``; 0: the whole cluster).
WATCHED_NAMESPACES = 0


def watch_connections(namespaces: int) -> int:
    """kopf's watches: one per watched namespace (one for the whole cluster),
    plus its scans of CRDs and namespaces and a spare for a watch's restart."""
    return max(1, namespaces) + 3


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """In-cluster service account first, else $KUBECONFIG (read now, not at
    import), in a session of at most ``API_CONNECTIONS`` connections
    besides the watches.

    kopf's own session has no limit: 500 pipelines created at once opened a
    TLS connection per status patch, each with its buffers (about 200 KiB in
    this process and a handshake's CPU on both ends): at 500 pipelines, 6 MiB
    of the operator's peak on a quiet machine, 20 to 50 MiB on a loaded one,
    where requests pile up (bench/operator_scale.py).
    Requests beyond the limit wait for a free connection instead."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    # A watch holds its connection for as long as it runs: they get their own
    # share, so patches never wait on them.
    limit = API_CONNECTIONS + watch_connections(WATCHED_NAMESPACES) if API_CONNECTIONS > 0 else 0
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               priority=info.priority, expiration=info.expiration, aiohttp_session=session)


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base in annotations: the status holds only ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="trainpipe.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="trainpipe.io", key="last-handled-configuration")
    settings.persistence.finalizer = "trainpipe.io/finalizer"
    # Our Events (phase changes, gate results) are posted explicitly; kopf's
    # own "Handler succeeded" lines would add an Event per pipeline per poll.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    # kopf's threads run only the sync handlers left (deletion's job stop):
    # reconciles run in ReconcilePool's workers.
    settings.execution.max_workers = RECONCILE_WORKERS


def register(poll_seconds: float, registry: kopf.OperatorRegistry | None = None) -> kopf.OperatorRegistry:
    """Register the handlers (the poll interval comes from the settings)."""
    registry = registry or kopf.get_default_registry()
    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(login)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(accept)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)(start)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)(start)
    kopf.timer(GROUP, VERSION, PLURAL, interval=poll_seconds, initial_delay=0.5, when=running,
               registry=registry)(poll)
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)(stop)
    return registry
