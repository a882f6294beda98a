"""A DistributedSampler that can start part-way through an epoch, so a run
resumed mid-epoch sees exactly the batches it had not yet seen, in the same
order. It yields ``(index, epoch)`` so the dataset can seed each sample's
augmentation from them (see ``data/dataset.py``)."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.start_index = 0

    def set_start(self, samples_already_seen: int) -> None:
        """Skip the first ``samples_already_seen`` indices of this rank's epoch."""
        self.start_index = samples_already_seen

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start_index :]
        return iter([(index, self.epoch) for index in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ShardSampler(DistributedSampler):
    """Evaluation order: this rank's share, no padding (totals are summed over
    ranks, so padding would count samples twice)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]
