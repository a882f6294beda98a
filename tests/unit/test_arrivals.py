"""A creation burst's first statuses go before reconciles (controller/arrivals.py):
the waiting itself, its bounds, and the handlers that feed it."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from trainpipe_operator.controller import handlers
from trainpipe_operator.controller.arrivals import Arrivals
from trainpipe_operator.controller.reconcile import TickResult, read_status


def test_nothing_on_its_way_means_no_wait() -> None:
    assert asyncio.run(Arrivals().settled()) == 0


def test_a_reconcile_waits_until_the_first_status_is_seen_stored() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        arrivals = Arrivals()
        arrivals.sent("uid-a")
        arrivals.sent("uid-b")
        waiting = asyncio.create_task(arrivals.settled())
        await asyncio.sleep(0.05)
        after_none = waiting.done()
        arrivals.stored("uid-a")
        await asyncio.sleep(0.05)
        after_one = waiting.done()
        arrivals.stored("uid-b")
        await asyncio.wait_for(waiting, timeout=5)
        return after_none, after_one, arrivals.pending()

    after_none, after_one, pending = asyncio.run(scenario())
    assert (after_none, after_one, pending) == (False, False, 0)


def test_a_gap_in_a_burst_shorter_than_the_quiet_period_lets_no_reconcile_through() -> None:
    async def scenario() -> tuple[bool, bool, float]:
        arrivals = Arrivals(quiet_s=2.0)
        arrivals.sent("first")
        arrivals.stored("first")  # none on its way: a gap
        waiting = asyncio.create_task(arrivals.settled())
        await asyncio.sleep(0.05)
        in_the_gap = waiting.done()
        arrivals.sent("second")  # the burst goes on
        arrivals.stored("second")
        await asyncio.sleep(0.05)
        after_the_next = waiting.done()
        waited = await asyncio.wait_for(waiting, timeout=10)
        return in_the_gap, after_the_next, waited

    in_the_gap, after_the_next, waited = asyncio.run(scenario())
    assert (in_the_gap, after_the_next) == (False, False)
    assert waited >= 2.0  # quiet for 2 s after the last first status


def test_a_steady_stream_of_new_pipelines_cannot_starve_a_reconcile() -> None:
    async def scenario() -> tuple[float, int]:
        arrivals = Arrivals(max_wait_s=0.2)
        arrivals.sent("never-stored")
        waited = await asyncio.wait_for(arrivals.settled(), timeout=5)
        return waited, arrivals.pending()

    waited, pending = asyncio.run(scenario())
    assert waited >= 0.2
    assert pending == 1  # still on its way: the reconcile went ahead regardless


def test_a_first_status_never_seen_stored_is_forgotten() -> None:
    now = [100.0]
    arrivals = Arrivals(forget_after_s=30, clock=lambda: now[0])
    arrivals.sent("patch-failed")
    assert arrivals.pending() == 1
    now[0] += 30
    assert arrivals.pending() == 0
    assert asyncio.run(arrivals.settled()) == 0


class RecordingPool:
    """Stands in for the reconcile workers: notes each reconcile, changes nothing."""

    def __init__(self) -> None:
        self.reconciled: list[str] = []

    async def reconcile(self, body: dict[str, Any]) -> TickResult:
        self.reconciled.append(body["metadata"]["name"])
        return TickResult(read_status(body))


def test_poll_waits_for_a_new_pipeline_accept_has_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = RecordingPool()
    monkeypatch.setattr(handlers, "ARRIVALS", Arrivals())
    monkeypatch.setattr(handlers, "RECONCILE_POOL", pool)
    running = {"metadata": {"name": "old", "uid": "u-old"}, "spec": {}, "status": {"phase": "Baseline"}}
    new_meta = {"name": "new", "namespace": "team-a", "uid": "u-new", "generation": 1}

    async def scenario() -> tuple[list[str], list[str], dict[str, Any]]:
        first = kopf.Patch()
        await handlers.accept(status=None, meta=new_meta, patch=first)
        poll = asyncio.create_task(handlers.poll(body=running, status=running["status"], spec={},
                                                 patch=kopf.Patch()))
        await asyncio.sleep(0.05)
        before = list(pool.reconciled)
        # The watch event after the patch: the new pipeline has its phase.
        await handlers.accept(status=first["status"], meta=new_meta, patch=kopf.Patch())
        await asyncio.wait_for(poll, timeout=5)
        return before, pool.reconciled, dict(first["status"])

    before, after, first_status = asyncio.run(scenario())
    assert first_status["phase"] == "Pending"
    assert before == [] and after == ["old"]


def test_a_deleted_pipeline_no_longer_holds_reconciles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "ARRIVALS", Arrivals())
    meta = {"name": "gone", "namespace": "team-a", "uid": "u-gone", "generation": 1}
    asyncio.run(handlers.accept(status=None, meta=meta, patch=kopf.Patch()))
    assert handlers.ARRIVALS.pending() == 1
    asyncio.run(handlers.accept(status=None, meta={**meta, "deletionTimestamp": "2026-12-03T00:00:00Z"},
                                patch=kopf.Patch()))
    assert handlers.ARRIVALS.pending() == 0
