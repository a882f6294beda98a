"""``SampleDataset``: (path, label) pairs decoded on access, with reproducible augmentation.

Why per-sample seeding: with a global RNG, the augmentation a sample gets
depends on how many samples came before it in the same process, so it changes
with the number of DataLoader workers and when a run resumes mid-epoch. Here
the transform runs under ``torch.random.fork_rng`` seeded from
(seed, epoch, index): the same sample in the same epoch is always augmented
the same way, and the caller's global RNG is left exactly as it was.

The epoch comes with the index: ``dataset[(index, epoch)]``. Wrap the
DataLoader's sampler in ``EpochSampler`` to get such keys. A plain int index
uses ``dataset.epoch`` (``set_epoch``), which a DataLoader worker process only
sees if it is set before the workers start (not with persistent workers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from trainpipe_trainer.data.decode import decode_file

Transform = Callable[[torch.Tensor], torch.Tensor]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class SampleDataset(Dataset):
    """Decodes ``samples[i] = (path, label)`` and applies ``transform`` deterministically."""

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        transform: Transform | None = None,
        seed: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.samples = [(Path(path), int(label)) for path, label in samples]
        self.transform = transform
        self.seed = int(seed)
        self.classes = list(classes) if classes is not None else None
        self.epoch = 0

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, (tuple, list)):
            index, epoch = int(key[0]), int(key[1])
        else:
            index, epoch = int(key), self.epoch
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.samples)}")
        path, label = self.samples[index]
        tensor = decode_file(path)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                tensor = self.transform(tensor)
        return tensor, label


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, epoch)`` from any index sampler (e.g. ``DistributedSampler``).

    ``set_epoch`` is passed on to the wrapped sampler, so a shuffling sampler
    and the augmentations move to the next epoch together.
    """

    def __init__(self, sampler: Iterable[int], epoch: int = 0) -> None:
        self.sampler = sampler
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        inner: Any = self.sampler
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.sampler:
            yield int(index), epoch

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]
