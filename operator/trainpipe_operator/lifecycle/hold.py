"""Held time: a suspended pipeline, or one whose RayJob waits for its Kueue
queue's admission, is held. Pure functions over the status: the budget
counts the time since the start less the time held, and the ``Suspended``
and ``Admitted`` conditions say where it is held."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from trainpipe_operator.spec.lifecycle_status import PauseState, SuspensionStatus
from trainpipe_operator.spec.status import Condition, PipelineStatus

# Time counted as held: no job of the pipeline runs. ``Suspending`` is not:
# the job still trains until its next step boundary.
HELD = ("Suspended", "WaitingForAdmission")
WAITING = "WaitingForAdmission"


def parse(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def held_seconds(status: PipelineStatus, now: datetime) -> float:
    """Seconds held so far: past holds plus the current one."""
    hold = status.suspension
    if hold is None:
        return 0.0
    current = 0.0
    since = parse(hold.since)
    if hold.state in HELD and since is not None:
        current = max((now - since).total_seconds(), 0.0)
    return hold.held_seconds + current


def effective_start(status: PipelineStatus, now: datetime | None = None) -> str | None:
    """``startedAt`` moved later by the time held: what the budget counts from."""
    started = parse(status.started_at)
    if started is None:
        return None
    held = held_seconds(status, now or datetime.now(timezone.utc))
    return iso(started + timedelta(seconds=held))


def enter(status: PipelineStatus, state: PauseState, now: datetime) -> SuspensionStatus:
    """Move the hold to ``state``; staying in it keeps its start."""
    hold = status.suspension or SuspensionStatus()
    status.suspension = hold
    if hold.state != state:
        _close(status, now)
        hold.state = state
        hold.since = iso(now) if state in HELD else None
    return hold


def leave(status: PipelineStatus, now: datetime) -> None:
    """End the current hold (the pipeline runs again): its time joins ``heldSeconds``."""
    hold = status.suspension
    if hold is None or hold.state is None:
        return
    _close(status, now)
    hold.state, hold.job, hold.phase, hold.epoch = None, None, None, None


def _close(status: PipelineStatus, now: datetime) -> None:
    hold = status.suspension
    if hold is not None:
        hold.held_seconds = round(held_seconds(status, now), 3)
        hold.since = None


def stopped_epoch(out: Path) -> int | None:
    """The last epoch a stopped job completed (its checkpoint's): from its
    evidence, else its ``logs/metrics.json``; None when neither says."""
    for path, key in ((out / "evidence.json", "epochs"), (out / "logs" / "metrics.json", "epochs")):
        try:
            epochs = json.loads(path.read_text(encoding="utf-8")).get(key) or []
        except (OSError, ValueError, AttributeError):
            continue
        if epochs:
            last = epochs[-1]
            number = last.get("num", last.get("epoch")) if isinstance(last, dict) else None
            return int(number) if isinstance(number, int) else len(epochs)
    return None


def conditions(status: PipelineStatus, generation: int | None, now: str) -> list[Condition]:
    """``Suspended`` (once the pipeline was ever suspended) and ``Admitted``
    (while a RayJob waits for its queue)."""
    hold = status.suspension
    if hold is None:
        return []
    out = []
    if hold.state in ("Suspending", "Suspended"):
        where = f" in {hold.phase}" if hold.phase else ""
        epoch = f" at epoch {hold.epoch}" if hold.epoch is not None else ""
        message = (f"suspended{where}{epoch} (spec.suspend: true); no job starts until spec.suspend is false"
                   if hold.state == "Suspended" else
                   f"suspending{where}: job {hold.job} was asked to stop at its next checkpoint")
        out.append(Condition(type="Suspended", status="True", reason=hold.state, message=message,
                             last_transition_time=now, observed_generation=generation))
    elif hold.stopped_jobs or hold.held_seconds:
        out.append(Condition(type="Suspended", status="False", reason="Running", message="not suspended",
                             last_transition_time=now, observed_generation=generation))
    if hold.state == WAITING:
        out.append(Condition(type="Admitted", status="False", reason=WAITING,
                             message=f"job {hold.job} waits for its Kueue queue to admit it (time not counted "
                                     "against the budget)", last_transition_time=now, observed_generation=generation))
    return out
