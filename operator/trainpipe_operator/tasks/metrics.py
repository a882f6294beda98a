"""A task's metrics as the control plane knows them: a name, which way is
better, what kind of number it is. Pure data: the control plane learns a
task's metrics from the spec (``spec.task``, ``spec.customTask.metrics``),
never from torch, and reads every figure by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["max", "min"]
# fraction: in [0, 1] (accuracy); loss: a mean loss (>= 0); nats: an
# information quantity (KL); count: an integer count; value: any number.
Kind = Literal["fraction", "loss", "nats", "count", "value"]
Split = Literal["val", "test"]
KINDS: tuple[str, ...] = ("fraction", "loss", "nats", "count", "value")
METRIC_NAME_PATTERN = r"^(val|test)_[a-z0-9_]+$"


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Metric:
    """One metric a task reports. ``split`` is where it is measured:
    ``val`` after every epoch (what the pipeline tracks until Finalization),
    ``test`` once, on the held-out split. An informational metric
    (``targetable`` false, e.g. the VAE's KL) is reported but is never a
    target: no direction makes it "better"."""

    name: str
    direction: Direction
    kind: Kind
    description: str
    split: Split
    targetable: bool = True

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "min"

    @property
    def relation(self) -> str:
        """How a value meets a target: ``<=`` for a metric to minimize, else ``>=``."""
        return "<=" if self.lower_is_better else ">="

    @property
    def is_fraction(self) -> bool:
        return self.kind == "fraction"

    def improvement(self, new: float | None, old: float | None) -> float:
        """How much better ``new`` is than ``old`` (positive: better, in the
        metric's units). A missing or non-finite ``new`` is minus infinity; a
        missing ``old`` with a finite ``new`` is plus infinity."""
        if not _finite(new):
            return -math.inf
        if not _finite(old):
            return math.inf
        assert new is not None and old is not None
        return old - new if self.lower_is_better else new - old

    def is_better(self, new: float | None, old: float | None) -> bool:
        return self.improvement(new, old) > 0

    def met(self, value: float | None, target: float) -> bool:
        """``value`` reaches ``target`` in this metric's direction; a missing or
        non-finite value never does."""
        if not _finite(value):
            return False
        assert value is not None
        return value <= target if self.lower_is_better else value >= target

    def best(self, values: list[float | None]) -> float | None:
        usable = [v for v in values if _finite(v)]
        if not usable:
            return None
        return min(usable) if self.lower_is_better else max(usable)  # type: ignore[type-var]
