"""Per-epoch running sums, by name. Sums, not means, so they add up across
DDP ranks and survive a mid-epoch checkpoint exactly.

The engine keeps ``loss_sum`` and ``count`` (and ``grad_norm_sum``,
``steps``, ``skipped``); a task adds its own (``correct1`` for top-1 hits,
``recon_sum`` for a VAE's reconstruction error, ...). A checkpoint stores the
flat mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping

ENGINE_SUMS = ("loss_sum", "count", "grad_norm_sum", "steps", "skipped")


class EpochSums:
    def __init__(self, values: Mapping[str, float] | None = None) -> None:
        self.values: dict[str, float] = {name: 0.0 for name in ENGINE_SUMS}
        for name, value in (values or {}).items():
            self.values[name] = float(value)

    def add(self, sums: Mapping[str, float]) -> None:
        for name, value in sums.items():
            self.values[name] = self.values.get(name, 0.0) + float(value)

    def add_batch(self, loss: float, count: int, task_sums: Mapping[str, float]) -> None:
        """A batch's mean ``loss`` over ``count`` samples, and the task's sums."""
        self.add({"loss_sum": loss * count, "count": count, **task_sums})

    def __getitem__(self, name: str) -> float:
        return self.values.get(name, 0.0)

    def __setitem__(self, name: str, value: float) -> None:
        self.values[name] = float(value)

    def state_dict(self) -> dict[str, float]:
        return dict(self.values)

    @property
    def count(self) -> float:
        return self.values["count"]

    @property
    def mean_loss(self) -> float:
        return self.values["loss_sum"] / self.count if self.count else math.nan
