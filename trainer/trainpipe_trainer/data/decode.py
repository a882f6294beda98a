"""Decode one file into a float32 CHW array with 3 channels.

Images are always converted to RGB (a grayscale digit becomes 3 equal
channels) and scaled to [0, 1], so every model sees the same input shape
whatever the files hold. 16-bit grayscale images are scaled by 65535.

``.npy`` files are loaded as they are (no scaling; values outside [0, 1] are
the user's choice) and must be numeric and shaped HxW or HxWxC with C in
(1, 3): channel-last, like the images they stand for. HxW and HxWx1 are
replicated to 3 channels. Channel-first arrays are rejected rather than
guessed, since a 3xHxW array and an HxWx3 array with H == 3 cannot be told
apart.

``decode_array`` returns numpy (the report hashes it without torch);
``decode_file`` wraps it as a torch tensor for the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainpipe_trainer.data.folder import ARRAY_EXTENSIONS

if TYPE_CHECKING:
    import torch


class DecodeError(ValueError):
    """A file could not be decoded; the message names the file and what to do."""


def _from_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            gray = np.asarray(image, dtype=np.float32) / 65535.0
            return np.repeat(gray[None], 3, axis=0)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _from_npy(path: Path) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    real = np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)
    if not (real or array.dtype == np.bool_):
        raise DecodeError(
            f"{path}: .npy dtype {array.dtype} is not a real number type; save float32"
        )
    array = array.astype(np.float32, copy=False)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.repeat(array[None], 3, axis=0)
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array.transpose(2, 0, 1))
    raise DecodeError(
        f"{path}: .npy shape {tuple(array.shape)} is not HxW or HxWxC with C in (1, 3); "
        "save channel-last arrays (transpose a CxHxW array to HxWxC)"
    )


def decode_array(path: str | Path) -> np.ndarray:
    """Return a float32 array shaped (3, H, W); raise ``DecodeError`` when the file cannot be read."""
    path = Path(path)
    try:
        array = _from_npy(path) if path.suffix.lower() in ARRAY_EXTENSIONS else _from_image(path)
    except DecodeError:
        raise
    except Exception as exc:  # PIL and numpy raise many types for a corrupt file
        kind = "array" if path.suffix.lower() in ARRAY_EXTENSIONS else "image"
        raise DecodeError(
            f"{path}: cannot be decoded as an {kind} ({type(exc).__name__}: {exc}); "
            "re-export the file or remove it from the dataset"
        ) from exc
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise DecodeError(f"{path}: decoded to an empty image of shape {tuple(array.shape)}")
    return array


def decode_file(path: str | Path) -> torch.Tensor:
    """The same as ``decode_array``, as a float32 torch tensor (3, H, W)."""
    import torch

    return torch.from_numpy(decode_array(path))
