"""Capture and restore every global RNG a training step draws from.

The captured state is made of tensors, ints, floats, strings, ``None`` and
dicts/lists of them only, so a checkpoint holding it loads with
``torch.load(..., weights_only=True)``. Layout::

    {"python": {"version": int, "state": int64 tensor [625], "gauss_next": float | None},
     "numpy":  {"bit_generator": "MT19937", "key": int64 tensor [624], "pos": int,
                "has_gauss": int, "cached_gaussian": float},
     "torch":  uint8 tensor (torch.get_rng_state()),
     "cuda":   [uint8 tensor per device]   # only when CUDA is available}
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    """Snapshot python ``random``, numpy's global RNG, torch CPU and (if present) all CUDA devices."""
    version, mt_state, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(name),
            # uint32 words; int64 holds them exactly (torch has no uint32 arithmetic needs here).
            "key": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every RNG back exactly where :func:`capture_rng_state` found it.

    Missing CUDA states on a CUDA machine (checkpoint from a CPU run), CUDA
    states on a CPU-only machine, or a different device count are tolerated:
    a warning says which CUDA generators were not restored.

    Raises:
        KeyError: ``state`` lacks the ``python``, ``numpy`` or ``torch`` entry
            (it was not produced by :func:`capture_rng_state`).
        ValueError / TypeError: an entry has the wrong shape or type (raised by
            ``random.setstate``, ``np.random.set_state`` or ``torch.set_rng_state``).
    """
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss_next"])
    )

    npy = state["numpy"]
    keys = np.asarray(npy["key"].tolist(), dtype=np.uint32)
    np.random.set_state(
        (
            npy["bit_generator"],
            keys,
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )

    torch.set_rng_state(state["torch"].cpu())

    cuda_states = state.get("cuda")
    if not torch.cuda.is_available():
        if cuda_states:
            logger.info(
                "checkpoint holds %d CUDA RNG state(s) but CUDA is not available; skipped",
                len(cuda_states),
            )
        return
    if not cuda_states:
        logger.warning(
            "checkpoint holds no CUDA RNG state (saved without CUDA); CUDA generators keep their seed"
        )
        return
    count = torch.cuda.device_count()
    if len(cuda_states) != count:
        logger.warning(
            "checkpoint holds %d CUDA RNG state(s) but %d device(s) are visible; restoring the first %d",
            len(cuda_states),
            count,
            min(count, len(cuda_states)),
        )
    for device, device_state in enumerate(cuda_states[:count]):
        torch.cuda.set_rng_state(device_state.cpu(), device=device)
