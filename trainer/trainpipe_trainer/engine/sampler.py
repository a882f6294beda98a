"""Samplers that can start part-way through an epoch, so a run resumed
mid-epoch sees exactly the batches it had not yet seen, in the same order.
They yield ``(index, epoch)`` so the dataset can seed each sample's
augmentation from them (see ``data/dataset.py``).

- ``ResumableDistributedSampler``: every rank holds the whole dataset; rank r
  takes every N-th index of one shared permutation.
- ``LocalShardSampler``: each rank holds only its own shard (sharded
  decoding); it permutes its local indices and pads to the longest shard.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


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


class LocalShardSampler(Sampler):
    """One rank's order over its own shard of a pre-sharded dataset.

    Every rank must run the same number of batches per epoch, or DDP's
    collectives hang: each rank yields ``padded_size`` indices (the longest
    rank's local size), its own permutation wrapped around as often as needed
    (as ``DistributedSampler`` pads): a few local samples are seen twice an
    epoch, none is left out. Truncating to the shortest rank would drop up to
    a file's chunks per rank every epoch. The order depends only on (seed,
    epoch, rank), so a mid-epoch resume (``set_start``) is exact."""

    def __init__(self, local_size: int, padded_size: int, rank: int, seed: int, shuffle: bool = True) -> None:
        if local_size <= 0 and padded_size > 0:
            raise ValueError(f"rank {rank} holds no sample of its shard but another holds {padded_size}: "
                             "nothing to pad from")
        if padded_size < local_size:
            raise ValueError(f"padded_size {padded_size} is below the local size {local_size}")
        self.local_size, self.num_samples = int(local_size), int(padded_size)
        self.rank, self.seed, self.shuffle = int(rank), int(seed), shuffle
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, samples_already_seen: int) -> None:
        """Skip the first ``samples_already_seen`` indices of this rank's epoch."""
        self.start_index = samples_already_seen

    def order(self) -> list[int]:
        """This rank's whole epoch: a permutation of its local indices, padded by wrapping."""
        if self.num_samples == 0:
            return []
        if self.shuffle:
            digest = hashlib.blake2b(f"shard:{self.seed}:{self.epoch}:{self.rank}".encode(), digest_size=8).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "big") & ((1 << 63) - 1))
            base = torch.randperm(self.local_size, generator=generator).tolist()
        else:
            base = list(range(self.local_size))
        return (base * math.ceil(self.num_samples / self.local_size))[: self.num_samples]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(index, self.epoch) for index in self.order()[self.start_index :]])

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
