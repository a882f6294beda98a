"""The trainer's heartbeat (``contract/heartbeat.py``): rank 0 writes where
training stands at most every ``every`` seconds while steps complete (and
validation batches: a long validation is not a hang), and at once when
training starts, at each epoch's end and when the loop ends. A hang (a
loader that never returns, a stuck collective) stops the beats; the
operator's watchdog notices."""

from __future__ import annotations

import time
from pathlib import Path

from trainpipe_trainer.contract.heartbeat import HEARTBEAT_FILE, Heartbeat

EVERY_SECONDS = 2.0


class HeartbeatWriter:
    def __init__(self, run_dir: Path, epochs: int, steps_per_epoch: int, every: float = EVERY_SECONDS,
                 clock=time.time) -> None:  # noqa: ANN001 - a test passes a fake clock
        self.path = run_dir / HEARTBEAT_FILE
        self.epochs = epochs
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.every = every
        self.clock = clock
        self.started_at = clock()
        self._last_write = -float("inf")
        self._steps_here = 0  # optimizer steps taken by this process (for step_seconds)
        self._first_step_at: float | None = None
        self._window: tuple[float, int] | None = None  # (start, samples) since the last write
        self.epoch_seconds: float | None = None
        self._throughput: float | None = None
        self.writes = 0

    def started(self, global_step: int, completed_epochs: int, step_in_epoch: int) -> None:
        self._beat("started", global_step, completed_epochs, step_in_epoch, force=True)

    def step(self, global_step: int, completed_epochs: int, step_in_epoch: int, samples: int) -> None:
        now = self.clock()
        self._steps_here += 1
        if self._first_step_at is None:
            self._first_step_at = now
        start, count = self._window or (now, 0)
        self._window = (start, count + samples)
        self._beat("training", global_step, completed_epochs, step_in_epoch)

    def validating(self, global_step: int, completed_epochs: int, step_in_epoch: int) -> None:
        self._beat("validating", global_step, completed_epochs, step_in_epoch)

    def epoch_end(self, global_step: int, completed_epochs: int, epoch_seconds: float) -> None:
        self.epoch_seconds = epoch_seconds
        self._beat("training", global_step, completed_epochs, 0, force=True)

    def finished(self, global_step: int, completed_epochs: int) -> None:
        self._beat("finished", global_step, completed_epochs, 0, force=True)

    def _beat(self, state: str, global_step: int, completed_epochs: int, step_in_epoch: int,
              force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_write < self.every:
            return  # throttled: a beat per step would be a file write per step
        if self._window is not None and self._window[1] and now > self._window[0]:
            self._throughput = self._window[1] / (now - self._window[0])
        throughput = self._throughput  # the last window's, when this one has no step yet
        step_seconds = None
        if self._first_step_at is not None and self._steps_here > 1:
            step_seconds = (now - self._first_step_at) / (self._steps_here - 1)
        Heartbeat(
            state=state, time=now, started_at=self.started_at, global_step=global_step,
            completed_epochs=completed_epochs, epochs=self.epochs, step_in_epoch=step_in_epoch,
            steps_per_epoch=self.steps_per_epoch, samples_per_second=throughput, step_seconds=step_seconds,
            epoch_seconds=self.epoch_seconds,
        ).write(self.path)
        self._last_write = now
        self.writes += 1
        if self._window is not None and self._window[1]:
            self._window = (now, 0)
