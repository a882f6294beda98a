"""Per-epoch running sums (loss, top-1, top-5, count). Sums, not means, so
they add up across DDP ranks and survive a mid-epoch checkpoint exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class EpochAccumulator:
    loss_sum: float = 0.0
    correct1: float = 0.0
    correct5: float = 0.0
    count: float = 0.0
    grad_norm_sum: float = 0.0
    steps: float = 0.0
    skipped: float = 0.0

    def add_batch(self, loss: float, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        top1, top5 = topk_correct(logits, targets)
        self.loss_sum += loss * n
        self.correct1 += top1
        self.correct5 += top5
        self.count += n

    def as_list(self) -> list[float]:
        return list(asdict(self).values())

    @classmethod
    def from_list(cls, values: list[float]) -> EpochAccumulator:
        return cls(*values)

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def top1(self) -> float:
        return self.correct1 / self.count if self.count else 0.0

    @property
    def top5(self) -> float:
        return self.correct5 / self.count if self.count else 0.0


def topk_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Count of samples whose target is the top-1 / among the top-5 predictions
    (top-5 falls back to top-k with k = the class count when it is under 5)."""
    k = min(5, logits.shape[1])
    top = logits.detach().topk(k, dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())
