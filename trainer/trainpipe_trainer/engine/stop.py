"""Graceful stop: SIGTERM/SIGINT set a flag that the loop reads at the next
optimizer-step boundary, where it writes a checkpoint and exits as resumable."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


class StopSignal:
    """A flag the loop polls. Tests set it directly; signal handlers set it
    too. ``stop_file``: a path whose existence also means "stop", so a parent
    process (the Ray driver, a DDP launcher) can ask its workers to stop."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.stop_file = stop_file

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._event.set()

    @property
    def requested(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self.request(self.stop_file.read_text(encoding="utf-8").strip() or "stop file")
        return self._event.is_set()


class TrainingInterrupted(Exception):
    """Raised by the loop after it checkpointed in response to a stop request."""

    def __init__(self, reason: str, epoch: int, step_in_epoch: int) -> None:
        super().__init__(
            f"training interrupted ({reason}) in epoch {epoch + 1} after step {step_in_epoch}; "
            "checkpoint written, start again in the same run directory to resume"
        )
        self.reason = reason
        self.epoch = epoch
        self.step_in_epoch = step_in_epoch


def write_stop_file(path: Path, reason: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason, encoding="utf-8")


def install_signal_handlers(stop: StopSignal) -> None:
    """Route SIGTERM and SIGINT to ``stop``; a second signal of either kind
    exits at once (the user insists). Only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.requested:
            log.warning("%s received again: exiting without waiting for a step boundary", name)
            raise SystemExit(128 + signum)
        log.warning("%s received: checkpointing at the next step boundary", name)
        stop.request(name)
        if stop.stop_file is not None:
            write_stop_file(stop.stop_file, name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
