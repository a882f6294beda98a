"""Waveform augmentations for the ``vae`` task's training split.

Names (``data.augment``, ``AUDIO_AUGMENTATIONS``):

* ``gain``: multiply by a random gain in [-6, +6] dB;
* ``shift``: circular shift by a random offset of up to 10% of the length,
  either way (the chunk's end wraps to its start);
* ``noise``: add white noise at a random SNR in [25, 40] dB relative to the
  chunk's own power (a silent chunk gets none);
* ``mask``: zero one random span of up to 10% of the length.

They run in that fixed order whatever order the config lists them in, and
every random number comes from ``generator``: the same generator state gives
the same output, so the dataset seeds one generator per (seed, epoch, index)
and the global RNG is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainpipe_trainer.contract.job_config import AUDIO_AUGMENTATIONS

GAIN_DB = 6.0
SHIFT_FRACTION = 0.1
SNR_DB = (25.0, 40.0)
MASK_FRACTION = 0.1


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def augment_wave(
    wave: torch.Tensor, names: Sequence[str], generator: torch.Generator
) -> torch.Tensor:
    """Return an augmented copy of ``wave`` (time on the last axis); ``wave`` is not changed."""
    unknown = [name for name in names if name not in AUDIO_AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown audio augmentation(s) {unknown}; allowed: {', '.join(AUDIO_AUGMENTATIONS)}"
        )
    out = wave.clone()
    length = out.shape[-1]
    wanted = set(names)
    if "gain" in wanted:
        out = out * 10.0 ** (_uniform(generator, -GAIN_DB, GAIN_DB) / 20.0)
    if "shift" in wanted:
        limit = int(SHIFT_FRACTION * length)
        out = torch.roll(out, _randint(generator, -limit, limit), dims=-1)
    if "noise" in wanted:
        snr = _uniform(generator, *SNR_DB)
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        power = out.pow(2).mean()
        out = out + noise * torch.sqrt(power / 10.0 ** (snr / 10.0))
    if "mask" in wanted:
        width = _randint(generator, 0, int(MASK_FRACTION * length))
        start = _randint(generator, 0, length - width)
        out[..., start : start + width] = 0.0
    return out
