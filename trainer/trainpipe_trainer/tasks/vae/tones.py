"""``builtin:tones``: a small synthetic audio dataset for the ``vae`` task.

Like ``builtin:digits`` for classification, it lets the pipeline run end to
end with no network and no dataset. 36 mono 16 kHz clips of 1.5 to 2 seconds,
nine of each kind:

* ``tone``: a pure sine with a short fade in and out;
* ``chord``: three or four harmonically related sines;
* ``sweep``: a sine whose frequency glides exponentially up or down;
* ``burst``: percussive noise bursts (decaying, band-coloured white noise).

Every parameter comes from one ``numpy`` generator with a fixed seed, and the
clips are written as 16-bit PCM wav (no timestamps in the header), so two
generations are byte-identical. The folder is written once: under a temporary
name first and renamed into place, so a crash or a second process racing
this one (another DDP rank) never leaves a half-written set behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainpipe_trainer.data.digits import default_cache_dir

TONES_DIRNAME = "tones-v1"
TONES_RATE = 16000
TONES_SEED = 20240613
KINDS = ("tone", "chord", "sweep", "burst")
PER_KIND = 9
TONES_FILES = len(KINDS) * PER_KIND


def _fade(wave: np.ndarray, rate: int, seconds: float = 0.02) -> np.ndarray:
    n = min(int(rate * seconds), wave.shape[0] // 2)
    ramp = np.linspace(0.0, 1.0, n, endpoint=False)
    wave[:n] *= ramp
    wave[wave.shape[0] - n :] *= ramp[::-1]
    return wave


def _tone(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    freq = rng.uniform(110.0, 1760.0)
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _chord(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    root = rng.uniform(110.0, 440.0)
    ratios = [1.0, 1.25, 1.5] if rng.random() < 0.5 else [1.0, 1.2, 1.5, 2.0]
    wave = sum(np.sin(2 * np.pi * root * r * t + rng.uniform(0, 2 * np.pi)) for r in ratios)
    return np.asarray(wave) / len(ratios)


def _sweep(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    low, high = rng.uniform(100.0, 400.0), rng.uniform(1500.0, 6000.0)
    start, end = (low, high) if rng.random() < 0.5 else (high, low)
    duration = t[-1] + (t[1] - t[0])
    k = np.log(end / start) / duration
    phase = 2 * np.pi * start * (np.exp(k * t) - 1.0) / k
    return np.sin(phase)


def _burst(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    from scipy.signal import lfilter

    rate = 1.0 / (t[1] - t[0])
    wave = np.zeros_like(t)
    hits = int(rng.integers(2, 6))
    decay = rng.uniform(15.0, 60.0)
    # A one-pole low-pass of random strength colours the noise.
    alpha = rng.uniform(0.05, 0.9)
    for _ in range(hits):
        onset = int(rng.uniform(0, t.shape[0] * 0.8))
        length = t.shape[0] - onset
        coloured = lfilter([alpha], [1.0, alpha - 1.0], rng.standard_normal(length))
        coloured /= np.max(np.abs(coloured)) + 1e-12
        wave[onset:] += coloured * np.exp(-decay * np.arange(length) / rate)
    return wave


_MAKERS = {"tone": _tone, "chord": _chord, "sweep": _sweep, "burst": _burst}


def generate_tones(rate: int = TONES_RATE, seed: int = TONES_SEED) -> dict[str, np.ndarray]:
    """file name -> float32 mono wave in [-1, 1]: the whole dataset, deterministically."""
    rng = np.random.default_rng(seed)
    clips: dict[str, np.ndarray] = {}
    for index in range(PER_KIND):
        for kind in KINDS:
            seconds = rng.uniform(1.5, 2.0)
            t = np.arange(int(seconds * rate)) / rate
            wave = _MAKERS[kind](rng, t)
            peak = np.max(np.abs(wave)) + 1e-12
            wave = _fade(wave / peak * rng.uniform(0.3, 0.9), rate)
            clips[f"{kind}_{index:02d}.wav"] = wave.astype(np.float32)
    return clips


def ensure_tones(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return ``<cache>/tones-v1``, writing it first if it is not there yet."""
    import soundfile as sf

    cache = default_cache_dir(cache_dir)
    root = cache / TONES_DIRNAME
    if root.is_dir():
        return root
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the dataset cache {cache} ({exc}); set data.cacheDir or "
            "$TRAINPIPE_CACHE to a writable folder"
        ) from exc
    staging = Path(tempfile.mkdtemp(prefix=f".{TONES_DIRNAME}.", suffix=".tmp", dir=cache))
    try:
        for name, wave in generate_tones().items():
            sf.write(str(staging / name), wave, TONES_RATE, subtype="PCM_16", format="WAV")
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
