"""Whether tracking calls may be made now, and what the status records when
they fail: the degradation, what is retried, and when.

A server that does not answer is not called again before ``retryAfter``
(60 s, doubling per consecutive failure up to an hour), so an unreachable
server costs each reconcile nothing; after ``MAX_FAILURES`` consecutive
failures the pending work is dropped (said in ``degraded``). Everything is
kept in the status (``TrackingStatus``), so it holds across operator ticks
and runner restarts. Nothing here ever holds a credential."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from trainpipe_operator.spec.pipeline import redact_uri
from trainpipe_operator.spec.status import TrackingStatus
from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE

FIRST_DELAY_S = 60.0
MAX_DELAY_S = 3600.0
MAX_FAILURES = 24  # about a day of hourly retries after the first hour

UNREACHABLE, GAVE_UP = "ServerUnreachable", "GaveUpRetrying"
REFUSED, ERROR, NO_CREDENTIALS = "RequestRefused", "TrackingError", "NoCredentials"


def _parse(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def may_call(tracking: TrackingStatus, now: datetime) -> bool:
    """False while a server that did not answer waits out its delay."""
    return tracking.retry_after is None or now >= _parse(tracking.retry_after)


def add_pending(tracking: TrackingStatus, item: str | None) -> None:
    if item and item not in tracking.pending:
        tracking.pending.append(item)


def done(tracking: TrackingStatus, item: str | None) -> None:
    """A call went through: the server answers again. An unreachable server
    with nothing left to retry is no longer a degradation (what was missed
    has been sent); a refusal or an error stays on record."""
    tracking.failures = 0
    tracking.retry_after = None
    if item in tracking.pending:
        tracking.pending.remove(item)
    if tracking.degraded_reason == UNREACHABLE and not tracking.pending:
        tracking.degraded = tracking.degraded_reason = None


def unreachable(tracking: TrackingStatus, server: str, what: str, error: str, now: datetime,
                item: str | None) -> None:
    """The server did not answer: record it, wait before the next call, keep
    ``item`` to retry. After MAX_FAILURES in a row the pending work is
    dropped, and that stays on record (reason GaveUpRetrying)."""
    tracking.failures += 1
    delay = min(FIRST_DELAY_S * 2 ** (tracking.failures - 1), MAX_DELAY_S)
    tracking.retry_after = (now + timedelta(seconds=delay)).isoformat(timespec="seconds")
    add_pending(tracking, item)
    message = (f"the MLflow server {redact_uri(server)} could not be reached to {what} ({_short(error)}); "
               f"the pipeline goes on, tracking retries after {tracking.retry_after}")
    reason = UNREACHABLE
    if tracking.failures >= MAX_FAILURES:
        message = (f"the MLflow server {redact_uri(server)} could not be reached {tracking.failures} times in a "
                   f"row (last: to {what}: {_short(error)}); gave up on: {', '.join(tracking.pending)}")
        reason = GAVE_UP
        tracking.pending, tracking.retry_after, tracking.failures = [], None, 0
    if tracking.degraded_reason == GAVE_UP and tracking.degraded:  # what was dropped stays said
        message = f"{tracking.degraded}; then {message}"
        reason = GAVE_UP
    tracking.degraded, tracking.degraded_reason = message[-2000:], reason


def refused(tracking: TrackingStatus, server: str, what: str, error: str) -> None:
    """The server answered with an error: recorded, not retried (the same
    request would be refused again)."""
    tracking.degraded = f"the MLflow server {redact_uri(server)} refused to {what}: {_short(error)}"
    tracking.degraded_reason = REFUSED


def no_credentials(tracking: TrackingStatus, problem: str) -> None:
    """The operator's credentials Secret does not fit: the calls go without
    (the server may refuse them: that is then recorded in its place)."""
    if tracking.degraded is None:
        tracking.degraded, tracking.degraded_reason = problem, NO_CREDENTIALS


def failed(tracking: TrackingStatus, what: str, error: str) -> None:
    """Anything else (a bug, an unreadable file): recorded, never raised."""
    tracking.degraded = f"tracking could not {what}: {_short(error)}"
    tracking.degraded_reason = ERROR


def job_degraded(tracking: TrackingStatus, folder: str, job_dir: Path) -> bool:
    """A job's ``tracking_status.json`` (contract.tracking.TRACKING_STATUS_FILE)
    saying its server could not be reached: recorded for its folder (the job
    kept training; its run misses what it could not send)."""
    try:
        data = json.loads((job_dir / TRACKING_STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not data.get("degraded"):
        return False
    server = redact_uri(str(data.get("server") or "its tracking server"))
    when = f" at {data['time']}" if data.get("time") else ""
    tracking.jobs_degraded[folder] = (f"the job in {folder} could not reach {server}{when} "
                                      f"({_short(str(data.get('error') or ''))})")
    return True


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
