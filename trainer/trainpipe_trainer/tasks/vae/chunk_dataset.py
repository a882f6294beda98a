"""``AudioChunkDataset``: in-memory wave chunks with reproducible augmentation.

The datasets are small (5-500 files), so every chunk is decoded once at
build time and kept as one ``[N, 1, chunk_samples]`` float32 tensor; an item
is a view of it, augmented on access.

Keys follow ``data/dataset.py``: ``dataset[(index, epoch)]`` (what
``EpochSampler`` yields) or a plain int, which uses ``dataset.epoch``
(``set_epoch``). An item is ``(wave_chunk [1, chunk_samples], index)``: the
index stands where a classifier's label would, so the engine's batch
plumbing stays the same, and tells which chunk a reconstruction came from.

Augmentation draws from its own ``torch.Generator`` seeded by
``sample_seed(seed, epoch, index)``: the same chunk in the same epoch is
always augmented the same way, whatever the worker count or a mid-epoch
resume, and the global RNG is never touched. With sharded decoding (each
DDP rank holds only its files' chunks) ``sample_ids`` gives each local chunk
the index it has in the whole split, so a chunk is augmented the same way
whatever the number of ranks, and two ranks' chunks never share draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainpipe_trainer.data.dataset import sample_seed


class AudioChunkDataset(Dataset):
    """``chunks[i]`` came from the file ``chunk_sources[i]`` (relative to the
    data root); ``sample_ids[i]`` (default ``i``) seeds its augmentation."""

    def __init__(
        self,
        chunks: Sequence[np.ndarray],
        chunk_sources: Sequence[str],
        chunk_samples: int,
        augment: Sequence[str] = (),
        seed: int = 0,
        sample_ids: Sequence[int] | None = None,
    ) -> None:
        if len(chunks) != len(chunk_sources):
            raise ValueError(f"{len(chunks)} chunks but {len(chunk_sources)} chunk sources")
        if sample_ids is not None and len(sample_ids) != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {len(sample_ids)} sample ids")
        self.chunk_samples = int(chunk_samples)
        if len(chunks):
            stacked = np.stack([np.asarray(c, dtype=np.float32).reshape(-1) for c in chunks])
            if stacked.shape[1] != self.chunk_samples:
                raise ValueError(f"chunks hold {stacked.shape[1]} samples, expected {self.chunk_samples}")
            self.waves = torch.from_numpy(stacked).unsqueeze(1)
        else:
            self.waves = torch.zeros((0, 1, self.chunk_samples), dtype=torch.float32)
        self.chunk_sources = list(chunk_sources)
        self.augment = list(augment)
        self.seed = int(seed)
        self.sample_ids = [int(i) for i in sample_ids] if sample_ids is not None else None
        self.epoch = 0

    @property
    def files(self) -> list[str]:
        """The distinct source files, sorted."""
        return sorted(set(self.chunk_sources))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.waves.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, (tuple, list)):
            index, epoch = int(key[0]), int(key[1])
        else:
            index, epoch = int(key), self.epoch
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} chunks")
        wave = self.waves[index]
        if self.augment:
            from trainpipe_trainer.tasks.vae.augment import augment_wave

            sample_id = self.sample_ids[index] if self.sample_ids is not None else index
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, sample_id))
            wave = augment_wave(wave, self.augment, generator)
        else:
            wave = wave.clone()
        return wave, index
