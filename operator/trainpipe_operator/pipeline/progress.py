"""What `trainpipe run` shows while it works. On a terminal: the phase, a
live epoch bar with ETA (read from the job's logs/metrics.json) and each
gate's table as it resolves. Elsewhere (CI, a pipe): the same as plain lines."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from trainpipe_operator.gates.checks import GateResult

BAR = 24


class Progress:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _line(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def line(self, text: str) -> None:
        if self.tty:
            print(file=self.stream, flush=True)  # off the epoch bar's line
        self._line(text)

    def phase(self, name: str, iteration: int) -> None:
        suffix = f" (iteration {iteration})" if iteration else ""
        self._line(f"==> {name}{suffix}")

    def gate(self, title: str, gate: GateResult) -> None:
        self._line(f"    {title}: {'PASSED' if gate.passed else 'FAILED'}")
        for c in gate.checks:
            value = "" if c.value is None else f" value={c.value}"
            threshold = "" if c.threshold is None else f" threshold={c.threshold}"
            self._line(f"      {c.result.upper():4} {c.id}{value}{threshold}  {c.message[:100]}")

    @contextlib.contextmanager
    def watch(self, phase: str, run_dir: Path, epochs: int | None, metric: str = "val_acc") -> Iterator[None]:
        """While a job runs, report each finished epoch: its losses and the
        target's metric, by name (``val_acc``, ``val_recon``, ...)."""
        if not self.enabled or epochs is None:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._poll,
                                  args=(phase, run_dir / "logs" / "metrics.json", epochs, stop, metric),
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            if self.tty:
                print(file=self.stream, flush=True)

    def _poll(self, phase: str, metrics: Path, epochs: int, stop: threading.Event, metric: str = "val_acc") -> None:
        seen = 0
        while not stop.wait(1.0):
            try:
                records = json.loads(metrics.read_text(encoding="utf-8"))["epochs"]
            except (OSError, ValueError, KeyError):
                continue
            if len(records) == seen:
                continue
            seen = len(records)
            last = records[-1]
            done = min(int(last["num"]), epochs)
            shown = [f"{name}={_num(last.get(name))}" for name in dict.fromkeys(("train_loss", "val_loss", metric))]
            text = f"{phase} epoch {done}/{epochs} {' '.join(shown)} ETA {_num(last.get('eta_seconds'), '.0f')}s"
            if self.tty:
                filled = int(BAR * done / max(epochs, 1))
                print(f"\r    [{'#' * filled}{'.' * (BAR - filled)}] {text}", end="", file=self.stream, flush=True)
            else:
                self._line(f"    {text}")


def _num(value: object, spec: str = ".4f") -> str:
    """A figure from metrics.json, or n/a when the epoch did not report it."""
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"
