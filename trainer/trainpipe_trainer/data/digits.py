"""``builtin:digits``: scikit-learn's bundled 8x8 digits as an ImageFolder.

The builtin dataset exists so the pipeline runs end to end on a machine with
no network and no dataset: ``load_digits()`` ships inside scikit-learn. It is
written once as PNG files so it goes through exactly the same scan, split,
decode and report path as a user's folder.

The folder is written under a temporary name and renamed into place, so a
crash (or a second process racing this one, e.g. another DDP rank) never
leaves a half-written cache behind: the final folder either exists complete
or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DIGITS_DIRNAME = "digits-v1"
DIGITS_SAMPLES = 1797
DIGITS_CLASSES = 10


def default_cache_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """``data.cacheDir`` if set, else ``$TRAINPIPE_CACHE``, else ``~/.cache/trainpipe/datasets``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("TRAINPIPE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "trainpipe" / "datasets"


def ensure_builtin_digits(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return ``<cache>/digits-v1``, writing it first if it is not there yet.

    Layout: ``<root>/<class>/<index:04d>.png``, grayscale, pixel = round(v * 255 / 16)
    where v in 0..16 is the scikit-learn value and index its position in ``load_digits()``.
    """
    cache = default_cache_dir(cache_dir)
    root = cache / DIGITS_DIRNAME
    if root.is_dir():
        return root

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the dataset cache {cache} ({exc}); set data.cacheDir or "
            "$TRAINPIPE_CACHE to a writable folder"
        ) from exc
    digits = load_digits()
    staging = Path(tempfile.mkdtemp(prefix=f".{DIGITS_DIRNAME}.", suffix=".tmp", dir=cache))
    try:
        for label in range(DIGITS_CLASSES):
            (staging / str(label)).mkdir()
        for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            pixels = np.rint(image * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(staging / str(int(label)) / f"{index:04d}.png")
        try:
            os.rename(staging, root)
        except OSError:
            # Another process finished first: its copy is complete and identical.
            if not root.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
