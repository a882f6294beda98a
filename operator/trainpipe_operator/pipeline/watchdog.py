"""The hang watchdog: a running training job whose heartbeat
(``heartbeat.json``, written by its rank 0 at least every few seconds while
steps or validation batches complete) has not moved for
``spec.gates.stallTimeout`` is declared hung (Stalled), stopped, and the
phase submits it again as its next attempt, resuming from its last
checkpoint (``runtime.maxAttempts`` attempts in all).

- The timeout is never less than ``STEP_FACTOR`` measured steps: a job
  whose steps are merely slow is not hung.
- Before its first heartbeat, an attempt is watched against
  ``spec.gates.startTimeout`` instead, counted from when its launcher first
  reports it RUNNING (under ``trainpipe run``, from its submission): a
  process group that never forms or a dataset that never loads is a hang
  too, but waiting for a queue, a node or an image is not.
- Each attempt's first sighting and its stall are kept in the phase
  folder's ``watchdog.json``, so a replay (the operator's next tick, a
  restarted operator, ``trainpipe run`` again) sees the same attempt the same
  way; a stalled attempt is never attached to again.
- The clocks of the trainer and the control plane are compared: keep them
  synchronized (NTP), which a stallTimeout of minutes tolerates easily.

``JobWatch`` serves both paths of the one phase machine: the operator checks
when its launcher says the job is still running (``JobPending``); a blocking
launcher (``trainpipe run``) is watched from a thread while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainpipe_operator.pipeline import rundir
from trainpipe_trainer.contract.heartbeat import HEARTBEAT_FILE, Heartbeat

log = logging.getLogger(__name__)

WATCHDOG_FILE = "watchdog.json"
STEP_FACTOR = 10  # the timeout is never under this many measured steps
POLL_SECONDS = 1.0
CLOCK_SLACK = 2.0  # seconds: the heartbeat of this attempt started after its submission, give or take


@dataclass
class Stall:
    submission: str
    phase: str
    folder: str
    silent_seconds: float
    timeout: float
    global_step: int | None
    completed_epochs: int | None
    at: str
    timeout_field: str = "stallTimeout"

    @property
    def message(self) -> str:
        if self.timeout_field == "startTimeout":
            return (f"{self.phase} job {self.submission} stalled: running for {self.silent_seconds:.0f} s without "
                    f"beginning to train (no heartbeat: imports, data, model or process group set-up hung), over "
                    f"spec.gates.startTimeout ({self.timeout:.0f} s); stopped, to be resubmitted from its last "
                    f"checkpoint")
        return (f"{self.phase} job {self.submission} stalled: no heartbeat for {self.silent_seconds:.0f} s "
                f"after step {self.global_step} (epoch {self.completed_epochs} done), over "
                f"spec.gates.stallTimeout ({self.timeout:.0f} s); stopped, to be resubmitted from its last checkpoint")


def effective_timeout(timeout: float, beat: Heartbeat | None) -> float:
    if beat is not None and beat.step_seconds:
        return max(timeout, STEP_FACTOR * beat.step_seconds)
    return timeout


def silent_seconds(beat: Heartbeat | None, attempt_started: float, now: float) -> float | None:
    """Seconds the attempt's heartbeat has not moved; None while it is not
    watched (no heartbeat of this attempt yet) or once training finished."""
    if beat is None or beat.state == "finished" or beat.started_at < attempt_started - CLOCK_SLACK:
        return None
    return now - beat.time


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")


class AttemptLog:
    """``<phase folder>/watchdog.json``: per submission, when the runner first
    saw it and, if it stalled, the stall."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / WATCHDOG_FILE

    def _read(self) -> dict[str, Any]:
        data = rundir.read_json(self.path)
        return data if isinstance(data, dict) else {}

    def started_at(self, submission: str, now: float) -> float:
        data = self._read()
        entry = data.setdefault(submission, {})
        if "startedAt" not in entry:
            entry["startedAt"] = now
            rundir.write_json(self.path, data)
        return float(entry["startedAt"])

    def running_at(self, submission: str, now: float | None) -> float | None:
        """When this attempt was first seen RUNNING; ``now`` notes it (once)."""
        data = self._read()
        entry = data.setdefault(submission, {})
        if "runningAt" not in entry and now is not None:
            entry["runningAt"] = now
            rundir.write_json(self.path, data)
        return float(entry["runningAt"]) if "runningAt" in entry else None

    def stall(self, submission: str) -> dict[str, Any] | None:
        stall = self._read().get(submission, {}).get("stall")
        return stall if isinstance(stall, dict) else None

    def record(self, stall: Stall) -> None:
        data = self._read()
        data.setdefault(stall.submission, {})["stall"] = {
            "at": stall.at, "silentSeconds": round(stall.silent_seconds, 1), "timeout": stall.timeout,
            "globalStep": stall.global_step, "completedEpochs": stall.completed_epochs,
            "timeoutField": stall.timeout_field, "message": stall.message}
        rundir.write_json(self.path, data)


class JobWatch:
    """One attempt of a training job, watched: ``on_beat`` gets each heartbeat
    read (the status's progress), ``stop`` is the launcher's stop, ``on_stall``
    hears of a stall once, when it is declared. ``start_timeout``: how long
    it may run without a heartbeat; ``blocking``: its launcher reports no
    state while it waits, so it counts as running from its submission."""

    def __init__(self, out: Path, phase: str, submission: str, timeout: float,
                 on_beat: Callable[[Heartbeat], None], stop: Callable[[str], Any] | None,
                 on_stall: Callable[[Stall], None], clock: Callable[[], float] = time.time,
                 start_timeout: float | None = None, blocking: bool = False) -> None:
        self.out, self.phase, self.submission, self.timeout = out, phase, submission, timeout
        self.on_beat, self.stop, self.on_stall, self.clock = on_beat, stop, on_stall, clock
        self.start_timeout = start_timeout
        self.log = AttemptLog(out)
        self.started = self.log.started_at(submission, clock())
        if blocking:
            self.log.running_at(submission, self.started)

    @property
    def stalled(self) -> dict[str, Any] | None:
        return self.log.stall(self.submission)

    def check(self, state: str | None = None) -> Stall | None:
        """Read the heartbeat once: report it, and declare (and stop) a hang.
        ``state``: the launcher's state of the job, where it has one."""
        beat = Heartbeat.read(self.out / HEARTBEAT_FILE)
        if beat is not None and beat.started_at < self.started - CLOCK_SLACK:
            beat = None  # an earlier attempt's
        if beat is not None:
            self.on_beat(beat)
        if self.stalled is not None or self.stop is None:
            return None
        now = self.clock()
        running_at = self.log.running_at(self.submission, now if state == "RUNNING" else None)
        if beat is None:
            if self.start_timeout is None or running_at is None or now - running_at <= self.start_timeout:
                return None
            stall = Stall(self.submission, self.phase, self.out.name, now - running_at, self.start_timeout, None,
                          None, _iso(now), timeout_field="startTimeout")
        else:
            silent = silent_seconds(beat, self.started, now)
            limit = effective_timeout(self.timeout, beat)
            if silent is None or silent <= limit:
                return None
            stall = Stall(self.submission, self.phase, self.out.name, silent, limit, beat.global_step,
                          beat.completed_epochs, _iso(now))
        self.log.record(stall)
        log.warning("%s", stall.message)
        self.on_stall(stall)
        try:
            self.stop(self.submission)
        except Exception:  # noqa: BLE001 - the stall is recorded: the next check or tick goes on
            log.exception("stopping the stalled job %s failed", self.submission)
        return stall

    @contextlib.contextmanager
    def guard(self, blocking: bool) -> Iterator[None]:
        """While a blocking launcher waits: check every second from a thread."""
        if not blocking:
            yield
            return
        done = threading.Event()

        def loop() -> None:
            while not done.wait(POLL_SECONDS):
                try:
                    if self.check() is not None:
                        return
                except Exception:  # noqa: BLE001 - a watcher never takes the run down
                    log.exception("watching %s failed", self.submission)

        thread = threading.Thread(target=loop, name=f"watch-{self.submission}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=30)
