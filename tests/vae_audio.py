"""Small audio files for the vae task's tests: distinct content per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(
    path: Path, wave: np.ndarray, rate: int = 16000, subtype: str | None = "PCM_16"
) -> Path:
    """Write ``wave`` ([samples] or [samples, channels]) in the format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".ogg":
        subtype = "VORBIS"
    sf.write(str(path), wave, rate, subtype=subtype)
    return path


def write_tones(root: Path, count: int, seconds: float = 1.5, start: int = 0, suffix: str = ".wav") -> list[Path]:
    """``count`` files of distinct tones: ``f{i:03d}<suffix>`` with frequency 200 + 37 * i Hz."""
    return [
        write_audio(root / f"f{i:03d}{suffix}", tone(seconds, freq=200.0 + 37.0 * i))
        for i in range(start, start + count)
    ]
