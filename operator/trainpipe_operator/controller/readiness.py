"""What the operator's readiness probe (``/readyz``) answers: named checks,
each saying "ready" (None) or why not (a sentence); the operator is ready
when every registered check is.

The operator registers its own checks before kopf starts (``kopf``: its
startup finished and its watchers run; ``watch``: the API server lists
TrainingPipelines for it, see ``readiness_checks``). Any other part that
must be up before the pod takes traffic registers one more, by name, on
``READINESS``: the admission webhook, for example, registers ``admission``
returning None once its HTTPS server listens with its certificate. A check
is a plain or async callable with no arguments; one that raises counts as
"not ready" with the exception as the reason.

Results are cached for ``cache_seconds`` so that probes arriving together
(kubelet, a person with curl) cost one round of checks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[], "str | None | Awaitable[str | None]"]
REASON_LIMIT = 500  # characters of a reason kept in the probe's answer


@dataclass(frozen=True)
class ReadinessReport:
    """Each check's result: None (ready) or why it is not."""

    checks: dict[str, str | None] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(reason is None for reason in self.checks.values())

    @property
    def not_ready(self) -> dict[str, str]:
        return {name: reason for name, reason in self.checks.items() if reason is not None}

    def as_json(self) -> dict[str, Any]:
        return {"ready": self.ready,
                "checks": {name: ("ok" if reason is None else reason) for name, reason in self.checks.items()}}


class Readiness:
    """The registry of readiness checks and their cached evaluation."""

    def __init__(self, cache_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._checks: dict[str, Check] = {}
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._last: tuple[float, ReadinessReport] | None = None
        self._lock: asyncio.Lock | None = None

    def register(self, name: str, check: Check) -> None:
        """Add ``check`` under ``name``.

        Raises:
            ValueError: ``name`` is empty or already registered (two parts
                claiming one name would hide one of them).
        """
        if not name:
            raise ValueError("a readiness check needs a name")
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered; choose another name")
        self._checks[name] = check
        self._last = None

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)
        self._last = None

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def evaluate(self) -> ReadinessReport:
        """Every check's result, at most ``cache_seconds`` old. With no check
        registered the operator is not ready (nothing has said it is)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            results = {name: await _run(check) for name, check in list(self._checks.items())}
            report = ReadinessReport(results or {"checks": "no readiness check is registered yet"})
            self._last = (self._clock(), report)
            return report


async def _run(check: Check) -> str | None:
    try:
        result = check()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # a failing check means "not ready", never a failing probe server
        return _shorten(f"the check raised {type(exc).__name__}: {exc}")
    return None if result is None else _shorten(str(result))


def _shorten(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


READINESS = Readiness()
