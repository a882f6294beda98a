"""``spec.ttlSecondsAfterFinished``: when a finished pipeline's jobs and Ray
resources are removed. The pipeline and its run directory stay: they are
the record. Pure functions; the operator does the removing
(``Reconciler.clean_up``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from trainpipe_operator.lifecycle.hold import iso, parse
from trainpipe_operator.spec.lifecycle_status import CleanupStatus
from trainpipe_operator.spec.status import PipelineStatus

TERMINAL = ("Succeeded", "Failed")
FIELD = "ttlSecondsAfterFinished"


def ttl_of(spec: Mapping[str, Any] | None) -> int | None:
    """The TTL the live resource names (validated by the CRD's schema: an int >= 0)."""
    value = (spec or {}).get(FIELD)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def pending(spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> bool:
    """A finished pipeline whose cleanup is still to come (the poll timer keeps it)."""
    status = status or {}
    return (status.get("phase") in TERMINAL and ttl_of(spec) is not None
            and not (status.get("cleanup") or {}).get("doneAt"))


def due(status: PipelineStatus, ttl: int) -> datetime | None:
    finished = parse(status.finished_at)
    return finished + timedelta(seconds=ttl) if finished is not None else None


def clean(status: PipelineStatus, ttl: int, now: datetime,
          remove: Callable[[], tuple[list[str], list[str]]]) -> list[tuple[str, str, str]]:
    """Once due, call ``remove`` (-> removed, still stopping) and record what
    it removed; done when nothing is left stopping. A failure is recorded in
    ``status.cleanup.message`` and retried on the next reconcile."""
    at = due(status, ttl)
    if at is None or (status.cleanup is not None and status.cleanup.done_at):
        return []
    cleanup = status.cleanup or CleanupStatus()
    status.cleanup = cleanup
    cleanup.due_at = iso(at)
    if now < at:
        return []
    try:
        removed, stopping = remove()
    except Exception as exc:  # noqa: BLE001 - an API or Ray problem: said, retried on the next reconcile
        cleanup.message = (f"removing the finished pipeline's jobs failed ({type(exc).__name__}: {str(exc)[:300]}); "
                           "retried on the next reconcile")
        return []
    cleanup.removed = sorted(set(cleanup.removed) | set(removed))
    if stopping:
        cleanup.message = f"waiting for {', '.join(stopping)} to stop before removing them"
        return []
    cleanup.done_at, cleanup.message = iso(now), ""
    what = ", ".join(cleanup.removed) or "nothing left to remove"
    return [("Normal", "CleanedUp", f"ttlSecondsAfterFinished ({ttl} s) passed: removed {what}"[:1000])]
