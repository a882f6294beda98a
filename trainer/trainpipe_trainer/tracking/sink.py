"""What a training job reports to a tracking server, and the guard that
keeps a tracking server from ever breaking training.

A :class:`Sink` is one destination (an MLflow run, a W&B run). The job calls
them through a :class:`SinkFanout`, which

- guards every call: a sink that raises is logged and never propagates, so
  a bug in a sink or a refused request costs the data of that call, not the
  training run;
- backs off when a server is unreachable (the sink's ``unavailable``
  exceptions, e.g. ``MlflowUnavailable``): the failed call and the calls
  after it are kept (bounded) and replayed once a cooldown has passed
  (doubling, capped), so an outage costs the job at most one failed attempt
  per cooldown, never a blocked epoch;
- records the degradation in ``tracking_status.json`` in the job's run
  directory (the server without credentials, the error, when), which the
  control plane turns into the ``TrackingDegraded`` condition.

Only rank 0 of a job builds a fan-out (``job.run_job``), so every other rank
reports nothing. No torch here: the control plane imports this package.
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from trainpipe_trainer.contract.tracking import TRACKING_STATUS_FILE

log = logging.getLogger("trainpipe.train")

#: How a job ended, as ``evidence.json`` says (``contract.evidence.JobStatus``).
JobStatus = Literal["completed", "early_stopped", "interrupted", "failed"]

#: Calls kept for replay while a server is unreachable; the oldest are dropped beyond this.
MAX_DEFERRED_CALLS = 10_000
#: The first cooldown after a failure, doubled per consecutive failure up to the cap (seconds).
COOLDOWN_FIRST_S = 5.0
COOLDOWN_MAX_S = 300.0
#: Errors other than unavailability logged in full per sink; later ones are counted.
MAX_LOGGED_ERRORS = 5


@dataclass(frozen=True)
class MediaFile:
    """A file drawn for one epoch (a confusion matrix, an audio preview).

    MLflow stores it as the artifact ``<artifact_path>/<name>``; W&B logs it
    as ``key`` (an image or audio) in the epoch's history row."""

    path: Path
    key: str
    artifact_path: str
    name: str
    kind: Literal["image", "audio"] = "image"
    caption: str | None = None
    sample_rate: int | None = None


class Sink(ABC):
    """One tracking destination. Its methods may raise: the fan-out guards them.

    ``server`` names where it reports (shown in ``tracking_status.json`` and
    logs), never with credentials. ``unavailable``: the exceptions meaning the
    server could not be reached (the call is retried after a cooldown); any
    other exception drops that one call."""

    name: ClassVar[str] = "sink"
    unavailable: tuple[type[BaseException], ...] = ()
    server: str = ""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the server could not be reached (retry later)."""
        return isinstance(exc, self.unavailable)

    @abstractmethod
    def start(self, params: Mapping[str, str]) -> None:
        """Before the first epoch of this attempt: the job's params; a resumed
        job learns here what its run already holds (never log it twice)."""

    @abstractmethod
    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        """One finished epoch (1-based, as in ``metrics.json``)."""

    @abstractmethod
    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        """One optimizer step's metrics (the global step, names as given)."""

    @abstractmethod
    def artifact(self, path: Path, artifact_path: str = "") -> None:
        """One file, stored under ``artifact_path`` with its own name."""

    @abstractmethod
    def finish(self, status: JobStatus) -> None:
        """The attempt ended (``interrupted``: a later attempt continues the run)."""


def cooldown_seconds(failures: int, first: float = COOLDOWN_FIRST_S, cap: float = COOLDOWN_MAX_S) -> float:
    """How long to leave an unreachable server alone after ``failures``
    consecutive failed attempts (>= 1): ``first`` doubled per failure, capped."""
    return min(cap, first * 2 ** max(0, failures - 1))


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """The error for logs and the status file: type and message, any
    ``user:password@`` of a URL removed, cut to ``limit`` characters."""
    text = _USERINFO.sub("", f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Call:
    method: str
    args: tuple[Any, ...]


@dataclass
class GuardedSink:
    """One sink and its health: started or not, the calls waiting for the
    server, the cooldown after a failure."""

    sink: Sink
    started: bool = False
    params: Mapping[str, str] = field(default_factory=dict)
    deferred: deque[_Call] = field(default_factory=deque)
    failures: int = 0  # consecutive unavailable attempts
    retry_at: float = 0.0
    disabled: bool = False
    degraded: bool = False
    last_error: str = ""
    degraded_at: str = ""
    errors: int = 0  # calls dropped for an error other than unavailability
    dropped: int = 0  # deferred calls dropped (queue full, or pending at the end)

    @property
    def name(self) -> str:
        return self.sink.name


class SinkFanout:
    """The sinks a job reports to, each call guarded (see the module doc).

    ``run_dir``: where ``tracking_status.json`` goes. ``clock``: monotonic
    seconds (tests pass their own to step through cooldowns)."""

    def __init__(self, sinks: Sequence[Sink], run_dir: Path, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_deferred: int = MAX_DEFERRED_CALLS,
                 first_cooldown: float = COOLDOWN_FIRST_S, max_cooldown: float = COOLDOWN_MAX_S) -> None:
        self.guarded = [GuardedSink(sink) for sink in sinks]
        self.run_dir = Path(run_dir)
        self.clock = clock
        self.max_deferred = max_deferred
        self.first_cooldown = first_cooldown
        self.max_cooldown = max_cooldown

    @property
    def status_path(self) -> Path:
        return self.run_dir / TRACKING_STATUS_FILE

    # ----------------------------------------------------------- the calls
    def start(self, params: Mapping[str, str]) -> None:
        for g in self.guarded:
            g.params = dict(params)
            self._attempt(g, None)

    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        self._each(_Call("epoch", (epoch, dict(metrics), tuple(media))))

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        self._each(_Call("step", (step, dict(metrics))))

    def artifact(self, path: Path, artifact_path: str = "") -> None:
        self._each(_Call("artifact", (Path(path), artifact_path)))

    def finish(self, status: JobStatus) -> None:
        """One last attempt for every sink, cooldown or not (so a short outage
        loses nothing), then ``finish``; whatever is still pending is lost
        and counted in the status file."""
        for g in self.guarded:
            if g.disabled:
                continue
            g.retry_at = 0.0
            self._attempt(g, _Call("finish", (status,)))
            if g.deferred:
                g.dropped += len(g.deferred)
                log.warning("Tracking: %s (%s) still unreachable at the end of the job: %d call(s) not reported",
                            g.name, g.sink.server, len(g.deferred))
                g.deferred.clear()
            if g.degraded:
                self._write_status()

    # ------------------------------------------------------------ the guard
    def _each(self, call: _Call) -> None:
        for g in self.guarded:
            if not g.disabled:
                self._attempt(g, call)

    def _attempt(self, g: GuardedSink, call: _Call | None) -> None:
        """Replay what is pending, then ``call``; on an unreachable server keep
        the rest for after the cooldown."""
        if call is not None:
            self._defer(g, call)
        if self.clock() < g.retry_at:
            return
        try:
            if not g.started:
                self._invoke(g, _Call("start", (g.params,)))
                g.started = True
            while g.deferred:
                pending = g.deferred[0]
                self._invoke(g, pending)
                g.deferred.popleft()
        except _Unavailable as exc:
            self._unavailable(g, exc.cause)
            return
        except _Refused as exc:
            if not g.started:  # a run that cannot be started cannot be logged to
                g.disabled = True
                g.deferred.clear()
                log.warning("Tracking: %s (%s) disabled for this job: start failed: %s",
                            g.name, g.sink.server, exc.text)
            self._degrade(g, exc.text)
            return
        if g.failures:
            log.info("Tracking: %s (%s) reachable again", g.name, g.sink.server)
            g.failures = 0
            self._write_status()

    def _invoke(self, g: GuardedSink, call: _Call) -> None:
        """Run one call. Raises _Unavailable (keep it for later) or, for a
        failed start, _Refused; any other failure drops just this call."""
        try:
            getattr(g.sink, call.method)(*call.args)
        except Exception as exc:  # noqa: BLE001 - a sink never breaks training
            if g.sink.is_unavailable(exc):
                raise _Unavailable(exc) from exc
            text = describe_error(exc)
            g.errors += 1
            if g.errors <= MAX_LOGGED_ERRORS:
                log.warning("Tracking: %s (%s) %s failed: %s", g.name, g.sink.server, call.method, text)
            elif g.errors == MAX_LOGGED_ERRORS + 1:
                log.warning("Tracking: %s: more failures; no longer logging each one", g.name)
            if call.method == "start":
                raise _Refused(text) from exc
            if not g.degraded:
                self._degrade(g, text)

    def _defer(self, g: GuardedSink, call: _Call) -> None:
        if len(g.deferred) >= self.max_deferred:
            g.deferred.popleft()
            g.dropped += 1
        g.deferred.append(call)

    def _unavailable(self, g: GuardedSink, exc: BaseException) -> None:
        g.failures += 1
        wait = cooldown_seconds(g.failures, self.first_cooldown, self.max_cooldown)
        g.retry_at = self.clock() + wait
        text = describe_error(exc)
        if g.failures == 1 or g.failures.bit_count() == 1:  # 1, 2, 4, 8, ... failures: not every one
            log.warning("Tracking: %s (%s) unreachable (%s); training continues, retrying in %.0fs "
                        "(%d call(s) kept)", g.name, g.sink.server, text, wait, len(g.deferred))
        self._degrade(g, text)

    def _degrade(self, g: GuardedSink, text: str) -> None:
        g.degraded = True
        g.last_error = text
        g.degraded_at = datetime.now(timezone.utc).isoformat()
        self._write_status()

    # ------------------------------------------------------ the status file
    def status(self) -> dict[str, Any] | None:
        """``tracking_status.json``'s content, or None while nothing degraded.

        The top level is the first degraded sink (``degraded``, ``server``,
        ``error``, ``time``, as the control plane reads it); ``sinks`` has
        each degraded sink's state."""
        degraded = [g for g in self.guarded if g.degraded]
        if not degraded:
            return None
        sinks = {
            g.name: {
                "server": g.sink.server,
                "error": g.last_error,
                "time": g.degraded_at,
                "reachable": g.failures == 0 and not g.disabled,
                "disabled": g.disabled,
                "pending": len(g.deferred),
                "dropped": g.dropped,
                "failedCalls": g.errors,
            }
            for g in degraded
        }
        first = degraded[0]
        return {"degraded": True, "server": first.sink.server, "sink": first.name,
                "error": first.last_error, "time": first.degraded_at, "sinks": sinks}

    def _write_status(self) -> None:
        content = self.status()
        if content is None:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.status_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(content, indent=2), encoding="utf-8")
            tmp.replace(self.status_path)
        except OSError as exc:  # the run dir itself failing is not tracking's to report
            log.warning("Tracking: %s not written: %s", self.status_path, exc)


class _Unavailable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Refused(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
