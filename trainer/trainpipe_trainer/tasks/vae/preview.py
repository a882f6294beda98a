"""Write audio previews: a wav file, its mel spectrogram as PNG, and its level.

Both files are written under a temporary name in the target folder and
renamed into place, so a reader (the gate, a person listening while the job
runs) never opens a half-written file. The PNG uses matplotlib's Agg canvas
directly (no pyplot): no global figure state, safe off the main thread.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def wave_stats(wave: np.ndarray) -> tuple[float, float]:
    """(peak = max |sample|, rms) as floats; NaN when the wave holds a non-finite sample."""
    data = np.asarray(wave, dtype=np.float64).reshape(-1)
    if data.size == 0:
        return 0.0, 0.0
    return float(np.max(np.abs(data))), float(np.sqrt(np.mean(np.square(data))))


def _temp_beside(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    return Path(name)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono wav. Samples are clipped to [-1, 1]; non-finite ones are written as 0
    (measure them first with ``wave_stats``: the preview record must say so)."""
    import soundfile as sf

    target = Path(path)
    data = np.nan_to_num(np.asarray(wave, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    tmp = _temp_beside(target, ".wav")
    try:
        sf.write(str(tmp), np.clip(data, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_mel_png(path: str | Path, log_mel: np.ndarray, title: str) -> None:
    """The log-mel [n_mels, frames] (or [1, n_mels, frames]) as an image, low bands at the bottom."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if hasattr(log_mel, "detach"):  # a torch tensor, on any device
        log_mel = log_mel.detach().float().cpu().numpy()
    data = np.asarray(log_mel, dtype=np.float32)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(f"save_mel_png expects a log-mel shaped [n_mels, frames], got {data.shape}")
    figure = Figure(figsize=(6, 3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(data, origin="lower", aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0)
    axes.set_title(title)
    axes.set_xlabel("frame")
    axes.set_ylabel("mel band")
    figure.colorbar(image, ax=axes, label="log-mel (0: -80 dB, 1: 0 dB)")
    figure.tight_layout()
    target = Path(path)
    tmp = _temp_beside(target, ".png")
    try:
        figure.savefig(str(tmp), format="png")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
