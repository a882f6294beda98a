"""Non-finite guard: a step whose loss or gradient norm is NaN/Inf is skipped
(no optimizer update), counted and logged; too many in a row fail the run
with that reason instead of training on garbage."""

from __future__ import annotations

import math


class NonFiniteTrainingError(RuntimeError):
    """``train.maxConsecutiveNonfinite`` steps in a row had a non-finite loss or gradient."""


class NonFiniteGuard:
    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def should_skip(self, loss: float, grad_norm: float, where: str) -> bool:
        """True when this step must be skipped.

        Raises:
            NonFiniteTrainingError: the skip limit is reached.
        """
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"{self.consecutive} consecutive steps with a non-finite loss or gradient "
                f"(last at {where}: loss={loss}, grad_norm={grad_norm}); the run is diverging or "
                "the data holds NaN/Inf: lower train.lr, keep train.gradClipNorm on, and check the "
                "Planning gate's samples-finite result"
            )
        return True

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive = int(state["consecutive"])
        self.total = int(state["total"])
