"""Per-sample transforms (torchvision ``transforms.v2``) on the decoded float tensor.

The input is the float32 (3, H, W) tensor from ``decode.py``. Every split is
resized to (image_size, image_size) with antialiasing and normalised; random
augmentations are added to the training transform only, so val and test
measure the same thing every epoch. All randomness comes from torch's global
generator, which ``SampleDataset`` seeds per (seed, epoch, index).

Augmentation names (``data.augment``):
  hflip       RandomHorizontalFlip(0.5)
  crop        RandomResizedCrop(image_size, scale=(0.8, 1.0)) in place of the resize
  rotation    RandomRotation(15)
  colorjitter ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from trainpipe_trainer.contract.job_config import AUGMENTATIONS

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def build_transform(
    image_size: int,
    augment: Sequence[str] = (),
    train: bool = False,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> v2.Compose:
    """Resize (or random-resized-crop), the augmentations when ``train``, then Normalize."""
    unknown = [name for name in augment if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"data.augment: unknown augmentation(s) {unknown}; allowed: {', '.join(AUGMENTATIONS)}"
        )
    active = set(augment) if train else set()
    size = (image_size, image_size)
    steps: list[torch.nn.Module] = [v2.ToDtype(torch.float32)]
    if "crop" in active:
        steps.append(v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True))
    else:
        steps.append(v2.Resize(size, antialias=True))
    if "hflip" in active:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if "rotation" in active:
        steps.append(v2.RandomRotation(15))
    if "colorjitter" in active:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
