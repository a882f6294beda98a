"""New pipelines are acknowledged before old ones are reconciled.

When many pipelines are created at once, every reconcile the operator runs
meanwhile (a worker's CPU, a status patch, Events, the watch event each
write sends back) competes with the first statuses of the new ones for the
same two things: the API server and the event loop. A person who has just
run ``kubectl apply`` waits for ``Pending``; a pipeline already running
does not notice its poll coming a few seconds late (jobs are polled, their
time is measured from timestamps, not from polls).

So a reconcile waits while a first status is on its way: from ``accept``
sending it to the watch event that shows it stored, and ``quiet_s`` more
after the last one was sent (a burst has gaps: without it, every waiting
reconcile would start in the first gap, and flood the API server while the
rest of the burst arrives). It waits at most
``max_wait_s``, so a steady stream of new pipelines cannot starve the
running ones; a first status whose event never comes (its patch failed:
``start`` writes it again) stops counting after ``forget_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class Arrivals:
    """The pipelines (by uid) whose first status is sent but not yet seen stored."""

    def __init__(self, max_wait_s: float = 30.0, forget_after_s: float = 30.0, quiet_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait_s = max_wait_s
        self.forget_after_s = forget_after_s
        self.quiet_s = quiet_s
        self._clock = clock
        self._sent: dict[str, float] = {}
        self._last_sent = float("-inf")
        # Made in the running loop at first use (an Event belongs to one
        # loop; tests run the handlers in several).
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:
            self._idle, self._loop = asyncio.Event(), loop
            if not self._sent:
                self._idle.set()
        return self._idle

    def sent(self, uid: str) -> None:
        """``accept`` has put a first status in its patch."""
        self._last_sent = self._clock()
        self._sent.setdefault(uid, self._last_sent)
        if self._idle is not None:
            self._idle.clear()

    def stored(self, uid: str) -> None:
        """An event shows the pipeline with a phase (or being deleted)."""
        if self._sent.pop(uid, None) is not None and not self._sent and self._idle is not None:
            self._idle.set()

    def pending(self) -> int:
        """First statuses on their way, the forgotten ones dropped."""
        now = self._clock()
        for uid in [u for u, at in self._sent.items() if now - at >= self.forget_after_s]:
            self.stored(uid)
        return len(self._sent)

    async def settled(self) -> float:
        """Wait until no first status is on its way and none was sent for
        ``quiet_s``, or ``max_wait_s``; return how long it waited (0 when
        it did not)."""
        if not self.pending() and self._clock() - self._last_sent >= self.quiet_s:
            return 0.0
        started = self._clock()
        deadline = started + self.max_wait_s
        idle = self._event()
        while (now := self._clock()) < deadline:
            if self.pending():
                # Wake at the deadline or when the oldest would be forgotten, at the latest.
                wake = min(deadline, min(self._sent.values()) + self.forget_after_s)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(idle.wait(), timeout=max(wake - now, 0.01))
            elif (calm := self._last_sent + self.quiet_s - now) > 0:
                await asyncio.sleep(min(calm, deadline - now))
            else:
                break
        return self._clock() - started
